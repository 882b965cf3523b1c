import logging
import signal

from django.core.management.base import BaseCommand, CommandError

from controller.leader import Refused
from controller.loop import Controller, loop_periods


class Command(BaseCommand):
    help = ("Run the controller's loops (reconcile and fail-over, probes, roll-ups, SLOs, autoscaler, sealer, "
            "lease sweeps) until interrupted.")

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--ticks", type=int, default=None, help="stop after N ticks (for tests)")
        parser.add_argument("--loops", default="", help="comma-separated loops to run (tick, monitor, sealer, "
                            "failover, schedules, probes); default all. `up` runs the probes loop as a process of its "
                            "own and the others in a second one. Each loop is led by one controller at a "
                            "time (PostgreSQL: the others stand by; SQLite: a second one is refused).")

    def handle(self, *args, **options) -> None:
        loops = tuple(n.strip() for n in options["loops"].split(",") if n.strip()) or None
        unknown = set(loops or ()) - set(loop_periods())
        if unknown:
            known = ", ".join(loop_periods())
            raise CommandError(f"unknown loop(s): {', '.join(sorted(unknown))}; choose from {known}")
        controller = Controller(loops)
        try:
            controller.claim()  # SQLite: refuses a loop another controller runs (exit 1)
        except Refused as exc:
            raise CommandError(str(exc)) from None

        def stop(signum, frame):  # type: ignore[no-untyped-def]
            controller.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        logging.getLogger("controller.loop").info("controller started: %s", ", ".join(controller.loops))
        try:
            controller.run_forever(max_ticks=options["ticks"])
        finally:
            controller.release()  # already, unless run_forever never ran (it releases on its way out)
        logging.getLogger("controller.loop").info("controller stopped")
