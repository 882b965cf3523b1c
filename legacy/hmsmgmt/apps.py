from django.apps import AppConfig


class LegacyHmsmgmtConfig(AppConfig):
    """History only: the migrations of `hmsmgmt` from when it was an app (see legacy/__init__.py)."""

    name = "legacy.hmsmgmt"
    label = "hmsmgmt"
    default_auto_field = "django.db.models.BigAutoField"
