"""The control loop: every tick, reconcile each service (fail-over included), and sweep steps
whose worker died. Second-grained, so it lives here rather than in django-q2's minute schedules."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection

from audit import sealer as audit_sealer
from services import monitoring, reconcile
from services.drivers import EngineUnavailable
from services.locks import LockTimeout
from services.models import Service
from workflows import engine

log = logging.getLogger("hmsmgmt.controller")


class Controller:
    def __init__(self) -> None:
        self.engine_down: set[str] = set()
        self.last_requeue = 0.0
        # Set by SIGTERM/SIGINT: the loop finishes its tick and returns, instead of being cut off
        # mid-query by an exception (which can leave a lock or a connection half-released).
        self.stopping = threading.Event()
        # Set while the fail-over thread replaces a reported death: the tick steps aside between
        # services (bounded), leaving the machine's CPU to that replacement's container start.
        self.failing_over = threading.Event()

    def tick(self) -> None:
        close_old_connections()
        yield_until = time.monotonic() + 2.0  # a tick steps aside for 2 s at most
        for svc_id, name, driver in Service.objects.values_list("id", "name", "driver"):
            self._yield_to_failover(yield_until)
            self.converge(svc_id, name, driver)
        try:
            engine.sweep_due()  # expired leases, approval deadlines, retries whose backoff passed
            if time.monotonic() - self.last_requeue > 10:
                engine.requeue_stranded()
                self.last_requeue = time.monotonic()
        except Exception:
            log.exception("lease sweep failed")
        try:
            audit_sealer.tick()  # seal what this tick audited; write a due checkpoint
        except Exception:
            log.exception("audit sealing failed")

    def converge(self, svc_id: int, name: str, driver: str) -> None:
        try:
            reconcile.converge(svc_id, component="controller", name=name)
            if driver in self.engine_down:
                self.engine_down.discard(driver)
                log.warning("%s engine is back; converging", driver)
        except EngineUnavailable as exc:
            if driver not in self.engine_down:
                log.error("%s engine unreachable (%s); desired state kept, retrying", driver, exc)
                self.engine_down.add(driver)
        except LockTimeout:
            pass  # a web request is converging this service right now
        except Exception:
            log.exception("reconcile of %s failed", name)

    def _yield_to_failover(self, until: float) -> None:
        while self.failing_over.is_set() and time.monotonic() < until and not self.stopping.is_set():
            time.sleep(0.01)

    def converge_reported(self, names: set[str]) -> None:
        """Services whose engine just reported a death: fail over now, not at the next tick."""
        for svc_id, name, driver in Service.objects.filter(name__in=names).values_list("id", "name", "driver"):
            self.converge(svc_id, name, driver)

    def _failover_loop(self, done: threading.Event) -> None:
        """Deaths reported by an engine are converged on this thread, the moment they arrive: not
        after the tick in progress (a tick over every service takes a good 100 ms). The per-service
        lock keeps it and the tick from converging one service at the same time."""
        checked = 0.0
        try:
            while not done.is_set():
                if time.monotonic() - checked > 5:
                    # While idle, not when a death arrives: replace an old or broken connection and
                    # run the health check, so the fail-over's first query is only its own.
                    checked = time.monotonic()
                    try:
                        close_old_connections()
                        with connection.cursor() as cursor:
                            cursor.execute("SELECT 1")
                    except Exception:
                        pass  # the database is away; the next round (or the fail-over) retries
                reported = reconcile.wait_urgent(0.2)
                if not reported:
                    continue
                self.failing_over.set()
                try:
                    self.converge_reported(reported)
                except Exception:  # the database went away, say: the tick is the safety net
                    log.exception("fail-over of %s failed", ", ".join(sorted(reported)))
                    checked = 0.0
                    done.wait(1.0)
                finally:
                    self.failing_over.clear()
        finally:
            connection.close()

    def run_forever(self, *, max_ticks: int | None = None) -> None:
        interval = settings.HMS_CONTROLLER_TICK_MS / 1000
        # Probe fan-out, SLA evaluation and the autoscaler run on their own 100 ms loop so probe
        # cadence (down to 1 s) does not wait for a slow reconcile pass.
        monitoring.start_in_background()
        # Audit sealing on its own loop too: entries sealed within a second even during a slow tick.
        audit_sealer.BackgroundSealer().start()
        # Engines that stream events (Docker) report an instance's death as it happens.
        reconcile.start_watchers()
        done = threading.Event()
        failover = threading.Thread(target=self._failover_loop, args=(done,), name="failover", daemon=True)
        failover.start()
        ticks = 0
        try:
            while (max_ticks is None or ticks < max_ticks) and not self.stopping.is_set():
                started = time.monotonic()
                self.tick()
                ticks += 1
                self.stopping.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            done.set()
            failover.join(timeout=35)
