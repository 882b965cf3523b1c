from django.apps import AppConfig
from django.conf import settings


class AutoscalingConfig(AppConfig):
    name = "autoscaling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: these import models, which exist only once the registry is ready.
        from autoscaling import actions, autoscaler
        from autoscaling.models import AutoscaleSettings
        from core.loops import register
        from core.rows import create_with
        from fleet.actions import on_scale
        from fleet.models import Service

        # A manual scale becomes an override row in the scale's own transaction.
        on_scale(actions.override_manual_scale)
        create_with(Service, AutoscaleSettings, "service")
        register("monitor", "autoscaling.evaluate", lambda: settings.HMS_AUTOSCALE_PERIOD_SECONDS,
                 autoscaler.evaluate_all)
        register("monitor", "autoscaling.prune", 300, autoscaler.prune)
