from django.apps import AppConfig


class HmsmgmtConfig(AppConfig):
    name = "hmsmgmt"
    default_auto_field = "django.db.models.BigAutoField"
