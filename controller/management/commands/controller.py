import logging
import signal

from django.core.management.base import BaseCommand

from controller.loop import Controller


class Command(BaseCommand):
    help = "Run the control loop (reconcile + fail-over, lease sweeps) until interrupted."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--ticks", type=int, default=None, help="stop after N ticks (for tests)")

    def handle(self, *args, **options) -> None:
        controller = Controller()

        def stop(signum, frame):  # type: ignore[no-untyped-def]
            controller.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        logging.getLogger("controller.loop").info("controller started")
        controller.run_forever(max_ticks=options["ticks"])
        logging.getLogger("controller.loop").info("controller stopped")
