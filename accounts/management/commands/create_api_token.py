from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.actions import create_api_token


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it once (only its hash is stored)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("username")
        parser.add_argument("--name", default="")
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(username=options["username"])
        except User.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        if not user.is_active:
            raise CommandError(f"user {user.username!r} is disabled")
        days = options["expires_days"]
        if days is not None and days <= 0:
            raise CommandError("--expires-days must be positive")
        expires = timezone.now() + timedelta(days=days) if days else None
        _, secret = create_api_token(user, actor="system:cli", name=options["name"], expires_at=expires)
        self.stdout.write(secret)
