from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts.groups import ensure_groups  # models are ready only now

        post_migrate.connect(ensure_groups, dispatch_uid="accounts.ensure_groups")
