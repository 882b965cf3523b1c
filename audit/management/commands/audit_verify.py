from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.archive import ArchiveError, verify_archives
from audit.checkpoints import CheckpointError, check_log, load
from audit.verify import oldest_pending_age, verify_database

STALE_PENDING_SECONDS = 60


class Command(BaseCommand):
    help = ("Verify the audit hash chain; exits non-zero naming the first bad sequence number. With "
            "--checkpoint FILE|DIR, also check the log against a signed checkpoint (catches a cut tail "
            "and a forged checkpoint).")

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                            help="a checkpoint file, or a directory (its newest checkpoint); repeatable")
        parser.add_argument("--archive", action="append", default=[], metavar="DIR",
                            help="an audit_archive directory: check its files and the boundary with the database")

    def handle(self, *args, **options) -> None:
        result = verify_database()
        if not result.ok:
            raise CommandError(f"audit chain {result.summary()}")
        problems: list[str] = []
        for path in options["checkpoint"]:
            try:
                doc = load(path)
            except CheckpointError as exc:
                raise CommandError(f"checkpoint {path}: {exc}") from None
            found = check_log(doc)
            problems += [f"checkpoint {doc['_path']}: {p}" for p in found]
            if not found:
                self.stdout.write(f"checkpoint {doc['_path']} ({doc['alg']}): signature valid, log covers "
                                  f"seq {doc['last_seq']} with the same hash")
        for directory in options["archive"]:
            try:
                found = verify_archives(Path(directory))
            except ArchiveError as exc:
                raise CommandError(f"archive {directory}: {exc}") from None
            problems += [f"archive {p}" for p in found]
            if not found:
                self.stdout.write(f"archives in {directory}: intact and linked to the database")
        if problems:
            raise CommandError("audit log does not match its checkpoints/archives: " + "; ".join(problems))
        self.stdout.write(f"audit chain {result.summary()}")
        age = oldest_pending_age()
        if age is not None and age > STALE_PENDING_SECONDS:
            self.stderr.write(f"warning: the oldest pending entry was written {age:.0f}s ago; is a sealer running "
                              "(the controller, or manage.py audit_seal --loop)?")
