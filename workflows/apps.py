from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Policies sit below workflows: hand them the count they need for run quotas.
        from policies.enforce import register_provider
        from workflows.engine import active_runs

        register_provider("active_runs", active_runs)
        # The autoscaler (services) scales on workflow demand: steps queued or running per service.
        from services.autoscale import register_demand_provider
        from workflows.models import StepRun

        register_demand_provider(lambda name: StepRun.objects.filter(
            status__in=(StepRun.Status.QUEUED, StepRun.Status.RUNNING), params__service=name).count())
