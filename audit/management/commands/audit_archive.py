from __future__ import annotations

from datetime import datetime, time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.archive import ArchiveError, archive


class Command(BaseCommand):
    help = ("Copy sealed audit entries created before DATE to DIR as JSON Lines with a signed manifest, "
            "continuing the previous archive there. Entries stay in the database (they are never deleted "
            "by the application); `audit_verify --archive DIR` checks the archives and the boundary.")

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--before", required=True, help="YYYY-MM-DD or an ISO date-time (UTC if naive)")
        parser.add_argument("--out", required=True, help="archive directory")

    def handle(self, *args, **options) -> None:
        raw = options["before"]
        when = parse_datetime(raw) if "T" in raw or " " in raw else None
        if when is None:
            day = parse_date(raw)
            if day is None:
                raise CommandError(f"--before {raw!r} is not a date (YYYY-MM-DD) or ISO date-time")
            when = datetime.combine(day, time.min)
        if timezone.is_naive(when):
            when = timezone.make_aware(when, timezone.get_current_timezone())
        try:
            manifest = archive(when, Path(options["out"]))
        except ArchiveError as exc:
            raise CommandError(str(exc)) from None
        if manifest is None:
            self.stdout.write("nothing new to archive")
            return
        self.stdout.write(f"archived seq {manifest['first_seq']}..{manifest['last_seq']} ({manifest['count']} "
                          f"entries) to {Path(options['out']) / manifest['file']}; last hash {manifest['last_hash']}")
