from django.apps import AppConfig
from django.conf import settings


class SloConfig(AppConfig):
    name = "slo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: these import models, which exist only once the registry is ready.
        from core.loops import register
        from core.rows import create_with
        from fleet.models import Service
        from health.rollups import register_latency_objectives
        from slo import alerts, capacity, sla
        from slo.models import Objectives

        create_with(Service, Objectives, "service")
        # health's roll-ups count probes slower than each service's latency objective.
        register_latency_objectives(
            lambda: dict(Objectives.objects.values_list("service_id", "latency_objective_ms")))
        register("monitor", "slo.evaluate", lambda: settings.HMS_SLA_EVAL_SECONDS, sla.evaluate_all)
        register("monitor", "slo.prune", 300, sla.prune)
        register("monitor", "slo.capacity", 1, make=capacity.CapacityWatch)
        register("monitor", "slo.resend_stranded", 10, alerts.resend_stranded)
        # Alertmanager resolves alerts nobody repeats: open incidents are posted again.
        register("monitor", "slo.alertmanager_repeat", lambda: settings.HMS_ALERTMANAGER_REPEAT_SECONDS,
                 alerts.repeat_firing)
