from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: these import models, which exist only once the registry is ready.
        from audit import jobs, signals
        from core.loops import register

        signals.connect_guardian()
        # The one sealer: links what was audited into the chain, writes due checkpoints.
        register("sealer", "audit.seal", 0, jobs.seal)
