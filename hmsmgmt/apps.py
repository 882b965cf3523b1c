from django.apps import AppConfig
from django.db.models.signals import post_migrate


class HmsmgmtConfig(AppConfig):
    name = "hmsmgmt"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from hmsmgmt.groups import ensure_groups

        # Sent once per app after migrate/flush; running after the last app ("hmsmgmt" is last in
        # INSTALLED_APPS) means every permission row exists by then.
        post_migrate.connect(ensure_groups, sender=self, dispatch_uid="hmsmgmt.ensure_groups")
