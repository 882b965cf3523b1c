from django.apps import AppConfig
from django.conf import settings


class SloConfig(AppConfig):
    name = "slo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: these import models, which exist only once the registry is ready.
        from core.loops import register
        from slo import sla

        register("monitor", "slo.evaluate", lambda: settings.HMS_SLA_EVAL_SECONDS, sla.evaluate_all)
        register("monitor", "slo.prune", 300, sla.prune)
