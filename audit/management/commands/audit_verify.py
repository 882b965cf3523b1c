from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.verify import verify_database


class Command(BaseCommand):
    help = ("Verify the audit hash chain; exits non-zero naming the first bad sequence number. With "
            "--checkpoint FILE|DIR, also check the log against a signed checkpoint (catches a cut tail "
            "and a forged checkpoint).")

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                            help="a checkpoint file, or a directory (its newest checkpoint); repeatable")

    def handle(self, *args, **options) -> None:
        from audit.checkpoints import CheckpointError, check_log, load

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
        if problems:
            raise CommandError("audit log does not match its checkpoint: " + "; ".join(problems))
        self.stdout.write(f"audit chain {result.summary()}")
