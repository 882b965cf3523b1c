from __future__ import annotations

from django.core.management.base import BaseCommand

from audit.checkpoints import write_checkpoint


class Command(BaseCommand):
    help = ("Seal pending entries, then write a signed checkpoint of the chain head to "
            "HMS_AUDIT_EXPORT_DIR (and POST it to HMS_AUDIT_CHECKPOINT_WEBHOOK if set).")

    def handle(self, *args, **options) -> None:
        cp = write_checkpoint()
        self.stdout.write(f"checkpoint seq {cp.last_seq} count {cp.count} hash {cp.last_hash} ({cp.alg}) "
                          f"-> {cp.exported_to}" + (f"; webhook {cp.webhook_status}" if cp.webhook_status else ""))
