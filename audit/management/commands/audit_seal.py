from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from audit.refusals import close_buckets
from audit.sealer import pending_count, seal_pending


class Command(BaseCommand):
    help = ("Seal pending audit entries (give them seq and hash, in order). The controller does this "
            "continuously; this is for a console without a controller, or to run a sealer on its own.")

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--loop", action="store_true", help="keep sealing until interrupted")
        parser.add_argument("--interval", type=float, default=0.2, help="seconds between passes with --loop")

    def handle(self, *args, **options) -> None:
        if not options["loop"]:
            close_buckets()
            n = seal_pending()
            self.stdout.write(f"sealed {n} entries; {pending_count()} pending")
            return
        try:
            while True:
                close_buckets()
                seal_pending()
                time.sleep(options["interval"])
        except KeyboardInterrupt:
            pass
