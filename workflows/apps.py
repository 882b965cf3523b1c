from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Policies sit below workflows: hand them the count they need for run quotas.
        from policies.enforce import register_provider
        from workflows.engine import active_runs

        register_provider("active_runs", active_runs)
