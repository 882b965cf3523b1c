from django.apps import AppConfig
from django.conf import settings


class HealthConfig(AppConfig):
    name = "health"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: these import models, which exist only once the registry is ready.
        from core.loops import register
        from core.rows import create_with
        from fleet.models import Service
        from health import prober, rollups
        from health.models import ProbeSettings

        create_with(Service, ProbeSettings, "service")
        # On a loop of its own (its own process in `up`): the monitor's slow jobs never delay a probe.
        register("probes", "health.probes", 0, make=prober.Prober)
        # Before slo's evaluation in the same pass (apps register in INSTALLED_APPS order).
        register("monitor", "health.rollup", lambda: settings.HMS_SLA_EVAL_SECONDS, make=rollups.Rollup)
        register("monitor", "health.prune", 300, rollups.prune)
