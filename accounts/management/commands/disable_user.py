from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.actions import disable_user


class Command(BaseCommand):
    help = "Disable USERNAME at once: sign-in refused, API tokens revoked, sessions ended (audited)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("username")
        parser.add_argument("--reason", default="")

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(username=options["username"])
        except User.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        result = disable_user(user, actor="system:cli", reason=options["reason"])
        self.stdout.write(f"disabled {user.get_username()}: {result['tokens_revoked']} token(s) revoked, "
                          f"{result['sessions_ended']} session(s) ended")
