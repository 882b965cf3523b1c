from django.apps import AppConfig


class LegacyServicesConfig(AppConfig):
    """History only: the `services` app's migrations (see legacy/__init__.py)."""

    name = "legacy.services"
    label = "services"
    default_auto_field = "django.db.models.BigAutoField"
