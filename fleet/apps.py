from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: these import models, which exist only once the registry is ready.
        from core.loops import register
        from fleet.jobs import FailoverWatch, NodeSync, Rebalancer, Reconciler

        register("tick", "fleet.reconcile", 0, make=Reconciler)
        # After the reconcile pass, on its node listing: a node's state reaches the page at once.
        register("tick", "fleet.nodes", 0, make=NodeSync)
        register("tick", "fleet.rebalance", 1, make=Rebalancer)
        register("failover", "fleet.failover", 0, make=FailoverWatch)
