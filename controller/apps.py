from django.apps import AppConfig


class ControllerConfig(AppConfig):
    """Runs the loops of core.loops; the apps register their jobs in their own ready()."""

    name = "controller"
    default_auto_field = "django.db.models.BigAutoField"
