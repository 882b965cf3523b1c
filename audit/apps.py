from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit import sealer, signals
        from core.loops import register

        signals.connect_guardian()
        # The one sealer: links what was audited into the chain, writes due checkpoints.
        register("sealer", "audit.seal", 0, sealer.tick)
