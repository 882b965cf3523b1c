"""All-in-one: migrate, load the demo, ensure an admin, run web + worker + controller + probes.

The probe loop runs as a process of its own (`controller --loops probes`), the controller runs
every other loop: the probes keep their cadence whatever a reconcile pass costs.

Ctrl-C stops all of it, the sample service processes included (their desired counts stay)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.actions import create_api_token
from controller.loop import CONTROL_LOOPS, PROBE_LOOPS
from fleet.models import Service
from fleet.reconcile import stop_local_instances


class Command(BaseCommand):
    help = "Run the whole console on the embedded default (SQLite, process driver, ORM broker)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--port", type=int, default=settings.HMS_PORT)
        parser.add_argument("--host", default=settings.HMS_HOST)
        parser.add_argument("--driver", choices=["process", "docker", "swarm"], default="process")
        parser.add_argument("--no-demo", action="store_true")

    def handle(self, *args, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        if not options["no_demo"]:
            call_command("load_demo", driver=options["driver"])
        self._ensure_admin()
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        env = {**os.environ}
        bind = f"{options['host']}:{options['port']}"
        # Each child in a process group of its own: Ctrl-C reaches only this command, which then
        # asks each child once (SIGTERM) to stop. Sharing the terminal's group, gunicorn's workers
        # got the terminal's SIGINT and then their master's quit signal too; a gthread worker
        # handling the second inside the first deadlocks in its pool's shutdown and, its master
        # gone, keeps the port forever (seen as an orphaned worker still listening on it).
        def start(*argv: str) -> subprocess.Popen:
            return subprocess.Popen(list(argv), env=env, cwd=settings.BASE_DIR, start_new_session=True)

        def start_with(extra: dict[str, str], *argv: str) -> subprocess.Popen:
            return subprocess.Popen(list(argv), env={**env, **extra}, cwd=settings.BASE_DIR, start_new_session=True)

        procs = {
            "web": start(python, "-m", "gunicorn", "hmsmgmt.wsgi", "-b", bind, "-w", "2", "--threads", "4",
                         "--timeout", "60", "--graceful-timeout", "10", "--access-logfile", "-"),
            "worker": start(python, manage, "qcluster"),
            # Alerts on a pool of their own: long workflow steps never hold an incident's webhook back.
            "alerts": start_with({"Q_CLUSTER_NAME": settings.HMS_ALERT_CLUSTER}, python, manage, "qcluster"),
            "controller": start(python, manage, "controller", "--loops", ",".join(CONTROL_LOOPS)),
            "probes": start(python, manage, "controller", "--loops", ",".join(PROBE_LOOPS)),
        }
        self.stdout.write(self.style.SUCCESS(f"\nhmsmgmt console: http://{bind}/   (API docs: http://{bind}/mgmt/docs)"))
        self.stdout.write("Press Ctrl-C to stop the console and every sample instance it started.\n")
        stopping = False

        def on_signal(signum, frame):  # type: ignore[no-untyped-def]
            nonlocal stopping
            stopping = True

        # SIGHUP too: with the children in their own groups, a closed terminal reaches only us.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, on_signal)
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping everything")
                        stopping = True
                time.sleep(0.3)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for name, proc in procs.items():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.stderr.write(f"{name} did not stop within 15 s; killing it")
                # The whole group, whatever happened: a worker of a master that is gone must not
                # stay behind holding the port.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
            stopped = stop_local_instances(component="up")
            self.stdout.write(f"stopped web, worker, controller and {stopped} sample instance(s)")
            # Containers and Swarm services belong to their engine, which keeps them serving (as
            # after any console restart); say so rather than let "0 instances" mislead.
            engines = sorted(set(Service.objects.exclude(driver=Service.Driver.PROCESS)
                                 .filter(desired_instances__gt=0).values_list("driver", flat=True)))
            if engines:
                self.stdout.write(f"instances on {' and '.join(engines)} keep running on their engine; "
                                  "scale them to 0 to stop them")

    def _ensure_admin(self) -> None:
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            return
        password = settings.HMS_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        admin = User.objects.create_superuser("admin", "", password)
        if settings.HMS_ADMIN_PASSWORD:
            self.stdout.write("created superuser 'admin' (password from HMS_ADMIN_PASSWORD)")
        else:
            self.stdout.write(self.style.WARNING(f"created superuser 'admin' with password: {password}  "
                                                 "(shown once; change it in /admin/)"))
        # A first token too, so the README's curl examples work at once (revocable in /admin/).
        _, raw = create_api_token(admin, actor="system:up", name="first run of manage.py up")
        more = "HMS_DEBUG=1 .venv/bin/python manage.py create_api_token admin"
        self.stdout.write(self.style.WARNING(f"API token for 'admin': {raw}  (shown once; more with: {more})"))
