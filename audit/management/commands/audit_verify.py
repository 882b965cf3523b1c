from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify_entries
from audit.models import AuditEntry


class Command(BaseCommand):
    help = "Verify the audit hash chain; exits non-zero naming the first bad sequence number."

    def handle(self, *args, **options) -> None:
        entries = AuditEntry.objects.order_by("seq").iterator(chunk_size=2000)
        result = verify_entries(entries)
        if not result.ok:
            raise CommandError(f"audit chain BROKEN at seq {result.bad_seq}: {result.problem}")
        self.stdout.write(f"audit chain intact: {result.checked} entries, last seq {result.last_seq}")
