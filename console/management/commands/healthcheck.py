"""`manage.py healthcheck controller|worker|web`: exit 0 when that part of the console works, 1
when not, with one line saying why: for systemd (ExecStartPost, a watchdog timer), a container's
HEALTHCHECK or a monitoring agent.

- controller: every loop this host's controller runs has beaten (controller.models.LoopBeat)
  within 3 tick periods (never less than 3 × the beat's own one-second spacing).
- worker: with Redis, django-q2's cluster stats (kept in Redis, seen by every process) show a
  cluster on this host idle or working. With the ORM broker the stats live in Django's cache,
  which is per process here (no shared cache is configured), so a stat written by a qcluster is
  never seen by this command; the dependable signal left is a round trip: a tiny task must come
  back within --timeout. It proves some worker of the pool takes tasks (not one on this host),
  and a long queue can make it late.
- web: GET /readyz of HMS_HOST:HMS_PORT (or --url) answers 200.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ, Task
from django_q.status import Stat
from django_q.tasks import async_task, fetch

from controller.loop import Beat
from controller.models import LoopBeat

ALIVE = (Conf.IDLE, Conf.WORKING)


class Unhealthy(Exception):
    pass


class Command(BaseCommand):
    help = "Exit 0 if the controller, worker or web process is healthy, 1 otherwise, with a one-line reason."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("part", choices=["controller", "worker", "web"])
        parser.add_argument("--host", default=socket.gethostname(),
                            help="controller/worker: the host whose processes to judge (default: this one)")
        parser.add_argument("--loops", default="",
                            help="controller: comma-separated loops that must beat (default: those found)")
        parser.add_argument("--max-age", type=float, default=None,
                            help="controller: seconds a beat may be old (default: 3 tick periods, at least 3 s)")
        parser.add_argument("--url", default="",
                            help="web: the readiness URL (default http://HMS_HOST:HMS_PORT/readyz)")
        parser.add_argument("--timeout", type=float, default=10.0,
                            help="web: request timeout; worker: how long the round-trip task may take")

    def handle(self, *args: Any, **options: Any) -> None:
        check = {"controller": check_controller, "worker": check_worker, "web": check_web}[options["part"]]
        try:
            line = check(options)
        except Unhealthy as exc:
            self.stderr.write(f"unhealthy: {options['part']}: {exc}")
            raise SystemExit(1) from None
        except DatabaseError as exc:
            self.stderr.write(f"unhealthy: {options['part']}: database: {' '.join(str(exc).split())[:200]}")
            raise SystemExit(1) from None
        self.stdout.write(f"ok: {options['part']}: {line}")


def controller_max_age() -> float:
    # Beat writes at most once a second, so at the default 500 ms tick a healthy loop's row can be
    # 1.5 s old: "3 tick periods" alone would flap. Three of whichever interval is longer.
    return 3 * max(settings.HMS_CONTROLLER_TICK_MS / 1000, Beat.EVERY)


def check_controller(options: dict[str, Any]) -> str:
    host = options["host"]
    max_age = options["max_age"] if options["max_age"] is not None else controller_max_age()
    wanted = [n.strip() for n in options["loops"].split(",") if n.strip()]
    # The newest row of each loop: a controller that crashed and came back under a new pid leaves
    # its old rows behind (only a clean stop clears them), and those must not fail the new one.
    latest: dict[str, LoopBeat] = {}
    for beat in LoopBeat.objects.filter(host=host).order_by("beat_at"):
        latest[beat.loop] = beat
    if not latest:
        raise Unhealthy(f"no controller loop has beaten on host {host}")
    missing = [name for name in wanted if name not in latest]
    if missing:
        raise Unhealthy(f"loop(s) {', '.join(missing)} never beat on host {host}")
    now = timezone.now()
    ages = {name: (now - beat.beat_at).total_seconds() for name, beat in latest.items()
            if not wanted or name in wanted}
    stale = {name: age for name, age in ages.items() if age > max_age}
    if stale:
        said = ", ".join(f"{name} {age:.1f}s ago (pid {latest[name].pid})" for name, age in sorted(stale.items()))
        raise Unhealthy(f"stale heartbeat on host {host} (limit {max_age:.1f}s): {said}")
    said = ", ".join(f"{name} {age:.1f}s" for name, age in sorted(ages.items()))
    return f"host {host}: every loop beat within {max_age:.1f}s ({said})"


def check_worker(options: dict[str, Any]) -> str:
    if Conf.SYNC:
        raise Unhealthy("HMS_Q_SYNC is on: tasks run inside the caller, no worker to check")
    broker = get_broker()
    if not Conf.ORM:  # Redis: cluster stats are in the broker, shared by every process
        host = options["host"]
        stats = [s for s in Stat.get_all(broker=broker) if s.host == host]
        if not stats:
            raise Unhealthy(f"no django-q2 cluster reports from host {host}")
        alive = [s for s in stats if s.status in ALIVE]
        if not alive:
            raise Unhealthy(f"cluster(s) on host {host}: " + ", ".join(f"{s.cluster_id} {s.status}" for s in stats))
        return f"host {host}: " + ", ".join(f"cluster {s.cluster_id} {s.status}, {len(s.workers)} worker(s)"
                                            for s in alive)
    return round_trip(options["timeout"])


def round_trip(timeout: float) -> str:
    """Send worker_echo through the queue and wait for it; its result row is deleted afterwards
    so health checks do not push real task history out of django-q2's save_limit."""
    token = uuid.uuid4().hex
    started = time.monotonic()
    task_id = async_task("console.health_views.worker_echo", token, task_name=f"healthcheck-{token[:12]}")
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            task = fetch(task_id)
            if task is not None:
                if task.success and task.result == token:
                    return f"a task came back in {time.monotonic() - started:.2f}s"
                raise Unhealthy(f"the round-trip task failed: {str(task.result)[:200]}")
            time.sleep(0.05)
        queued = get_broker().queue_size()
        # Not picked up: take it off the queue, or a worker that starts later runs it for nobody.
        _dequeue(task_id)
        raise Unhealthy(f"no worker ran a task within {timeout:.0f}s ({queued} task(s) queued)")
    finally:
        Task.objects.filter(id=task_id).delete()


def _dequeue(task_id: str) -> None:
    # Only on a timeout, when the queue is what is wrong: unsigning each payload is not cheap.
    for queued in OrmQ.objects.all():
        try:
            if queued.task_id() == task_id:
                queued.delete()
        except Exception:
            continue  # a payload this process cannot unsign is not ours


def check_web(options: dict[str, Any]) -> str:
    url = options["url"] or f"http://{settings.HMS_HOST}:{settings.HMS_PORT}/readyz"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    host = _host_header()
    if host and not options["url"]:
        # Django answers 400 to a Host it does not allow; the console's own name passes.
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=options["timeout"]) as response:  # noqa: S310 (http only)
            return f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"{url} answered {exc.code}{_failing(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unhealthy(f"{url} unreachable: {reason}") from None


def _failing(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict) or not data.get("failing"):
        return ""
    checks = data.get("checks", {})
    return ": " + "; ".join(f"{name} ({checks.get(name, '?')})" for name in data["failing"])


def _host_header() -> str:
    for allowed in settings.ALLOWED_HOSTS:
        if allowed and allowed != "*":
            return allowed.lstrip(".")
    return ""

