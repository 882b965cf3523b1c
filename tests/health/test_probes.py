"""Probes: the schedule's cadence (pure), probing real sockets, the probe loop storing results at
each instance's cadence and failing over a failing endpoint, roll-ups, and real sample instances
failing their health check (detected, failed over with evidence, replaced; paused by maintenance)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.utils import timezone

from audit.models import AuditEntry
from core import stats
from core.loops import Loop
from fleet import actions, reconcile
from fleet.models import Instance, Service
from health import actions as health_actions
from health import probes, rollups
from health.models import MaintenanceWindow, ProbeResult, ProbeRollup, ProbeSettings
from health.prober import SLOT_SECONDS, fire_at, first_due, next_due
from tests.conftest import service_with, wait_for

SAMPLE = "{python} -m fleet.sample --port {port}"


def make_service(name: str = "probed", **fields) -> Service:
    return service_with(name, command=SAMPLE, **{"probe_interval_seconds": 1.0, "failure_threshold": 2, **fields})


def running_instance(svc: Service, count: int = 1) -> list[Instance]:
    actions.scale_service(svc, count, actor="system:test")
    wait_for(lambda: reconcile.converge(svc.pk, component="test").running == count, timeout=20,
             message="sample instances running")
    return list(svc.instances.filter(state=Instance.State.RUNNING))


def fault(inst: Instance, mode: str, **extra) -> None:
    resp = requests.post(f"http://{inst.host}:{inst.port}/fault", json={"mode": mode, **extra}, timeout=2)
    assert resp.status_code == 200


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Endpoint(ThreadingHTTPServer):
    """A real listening /health on a loopback port, answering `status` (changeable mid-test)."""

    daemon_threads = True
    status = 200


class _Health(BaseHTTPRequestHandler):
    server: Endpoint

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass  # quiet: dozens of probes a test


@pytest.fixture
def endpoints() -> Iterator[Callable[[int], list[Endpoint]]]:
    started: list[Endpoint] = []

    def _start(n: int) -> list[Endpoint]:
        for _ in range(n):
            server = Endpoint(("127.0.0.1", 0), _Health)
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            started.append(server)
        return started[-n:]

    yield _start
    for server in started:
        server.shutdown()
        server.server_close()


def rows_for(svc: Service, eps: list[Endpoint]) -> list[Instance]:
    """Instance rows as the reconciler leaves them, pointing at the endpoints (no process behind
    them, so nothing but the probes judges them)."""
    now = timezone.now()
    return [Instance.objects.create(service=svc, driver="process", state=Instance.State.RUNNING,
                                    health=Instance.Health.UP, host="127.0.0.1", port=ep.server_address[1],
                                    started_at=now, healthy_at=now) for ep in eps]


class Running:
    """The "probes" loop on a thread of its own, as the probe process runs it."""

    def __init__(self) -> None:
        self.loop = Loop("probes", 0.1)
        self.thread = threading.Thread(target=self.loop.run, name="probes", daemon=True)

    def __enter__(self) -> Loop:
        self.thread.start()
        return self.loop

    def __exit__(self, *exc: object) -> None:
        self.loop.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the probe loop did not stop"


# --- pure parts -----------------------------------------------------------------------------------
def test_histogram_percentiles_use_bucket_upper_bounds() -> None:
    hist = [0] * 20
    hist[stats.bucket_of(3)] = 90  # ≤ 5 ms
    hist[stats.bucket_of(480)] = 10  # ≤ 500 ms
    assert stats.hist_percentile(hist, 0.50) == 5
    assert stats.hist_percentile(hist, 0.95) == 500
    assert stats.hist_percentile([0] * 20, 0.95) is None


def test_the_schedule_keeps_each_instance_on_its_grid() -> None:
    assert next_due(100.0, 1.0, 100.02) == 101.0  # a probe fired late keeps the cadence: no drift
    assert next_due(100.0, 5.0, 100.0) == 105.0
    assert next_due(100.0, 1.0, 103.5) == 104.0  # a stalled loop skips the missed slots, once
    assert next_due(100.0, 1.0, 104.0) == 105.0  # always strictly after now
    offsets = [first_due(i, 5.0, 0.0) for i in range(1, 101)]
    assert all(0.0 <= o < 1.0 for o in offsets)  # every new instance probed within its first second
    per_tenth = [sum(1 for o in offsets if k / 10 <= o < (k + 1) / 10) for k in range(10)]
    assert max(per_tenth) <= 12, per_tenth  # spread evenly over the second, not one burst
    assert all(0.0 <= first_due(i, 1.0, 10.0) - 10.0 < 1.0 for i in range(50))
    # Started on the slot grid, never early, at most one slot late: the grid itself stays exact.
    for due in (100.0, 100.001, 100.049, 123.4567):
        assert due <= fire_at(due) < due + SLOT_SECONDS + 1e-9
    assert fire_at(100.01) == fire_at(100.04)  # one wake-up for both


def test_parse_status_judges_the_status_line_only() -> None:
    assert probes.parse_status(b"HTTP/1.1 200 OK\r\n", 3.0) == probes.Probe(True, 3.0, 200, "")
    down = probes.parse_status(b"HTTP/1.0 503 Service Unavailable\r\n", 3.0)
    assert not down.ok and down.status == 503 and down.error == "HTTP 503"
    assert not probes.parse_status(b"SSH-2.0-OpenSSH\r\n", 1.0).ok
    assert not probes.parse_status(b"", 1.0).ok


@pytest.mark.timeout(30)
def test_probe_reports_up_down_refused_and_silent_endpoints(endpoints) -> None:
    up, failing = endpoints(2)
    failing.status = 503
    with socket.socket() as refused, socket.socket() as silent:
        refused.bind(("127.0.0.1", 0))  # bound but not listening: refused
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts, never answers: a timeout

        async def all_four() -> list[probes.Probe]:
            return await asyncio.gather(*(probes.probe("127.0.0.1", port, "/health", 0.5) for port in (
                up.server_address[1], failing.server_address[1], refused.getsockname()[1],
                silent.getsockname()[1])))

        # On a thread of its own: a browser test's Playwright keeps an event loop on this one.
        with ThreadPoolExecutor(1) as pool:
            ok, bad, no, mute = pool.submit(asyncio.run, all_four()).result(timeout=20)
    assert ok.ok and ok.status == 200 and ok.latency_ms > 0
    assert not bad.ok and bad.status == 503
    assert not no.ok and no.status is None and no.error
    assert not mute.ok and mute.error == "timeout after 0.5s" and mute.latency_ms >= 400


# --- scheduling and roll-ups ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_the_probe_loop_stores_each_instance_at_its_cadence(transactional_db: None, endpoints) -> None:
    """Real sockets, the real loop: over a few seconds each endpoint is probed about once per its
    interval (bounds generous: a count, not a speed), a stopped instance no more."""
    fast = make_service("fast")
    slow = make_service("slow")
    ProbeSettings.objects.filter(pk=slow.pk).update(probe_interval_seconds=3.0)
    eps = endpoints(6)
    fast_rows, slow_rows = rows_for(fast, eps[:4]), rows_for(slow, eps[4:])
    stopped = rows_for(fast, endpoints(1))[0]
    Instance.objects.filter(pk=stopped.pk).update(state=Instance.State.STOPPED)
    with Running() as loop:
        wait_for(lambda: ProbeResult.objects.filter(instance__in=fast_rows).count() >= 4 * 6, timeout=30,
                 interval=0.2, message="six rounds of probes of the fast service")
        assert loop.passes > 1
    per = {i.pk: ProbeResult.objects.filter(instance=i).count() for i in fast_rows + slow_rows}
    fast_counts = [per[i.pk] for i in fast_rows]
    slow_counts = [per[i.pk] for i in slow_rows]
    # ≥ 6 s for six rounds of 1 s: the 3 s service got about two, never as many as the fast one.
    assert min(fast_counts) >= 4 and max(fast_counts) <= 12, fast_counts
    assert all(1 <= c <= 5 for c in slow_counts) and max(slow_counts) < min(fast_counts), (slow_counts, fast_counts)
    assert not ProbeResult.objects.filter(instance=stopped).exists()
    assert ProbeResult.objects.filter(ok=False).count() == 0
    assert set(ProbeResult.objects.values_list("status_code", flat=True)) == {200}
    for inst in fast_rows:  # the gaps between one instance's probes are its interval, give or take
        ats = sorted(ProbeResult.objects.filter(instance=inst).values_list("at", flat=True))
        gaps = [(b - a).total_seconds() for a, b in zip(ats, ats[1:], strict=False)]
        assert all(0.5 < g < 3.0 for g in gaps), gaps


@pytest.mark.timeout(60)
def test_the_probe_loop_fails_over_a_failing_endpoint_with_evidence(transactional_db: None, endpoints) -> None:
    svc = make_service("failing")
    good_ep, bad_ep = endpoints(2)
    good, bad = rows_for(svc, [good_ep, bad_ep])
    with Running():
        wait_for(lambda: ProbeResult.objects.filter(instance=bad, ok=True).exists(), timeout=20, interval=0.1,
                 message="a good probe first")
        bad_ep.status = 503
        entry = wait_for(lambda: AuditEntry.objects.filter(action="failover", payload__instance=bad.pk).first(),
                         timeout=20, interval=0.1, message="the fail-over of the failing endpoint")
        wait_for(lambda: ProbeResult.objects.filter(instance=good).count() >= 5, timeout=20, interval=0.2,
                 message="the healthy endpoint still probed after")
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.state == Instance.State.EXITED and bad.health == Instance.Health.DOWN
    assert good.state == Instance.State.RUNNING and good.health == Instance.Health.UP and good.probe_failures == 0
    assert entry.actor == "system:monitor"
    ev = entry.payload["evidence"]
    assert ev["consecutive_failures"] == 2 and ev["threshold"] == 2
    assert [p["status"] for p in ev["probes"][:2]] == [503, 503] and ev["probes"][2]["ok"]
    assert 0.5 <= ev["detected_after_seconds"] <= 5
    # Failed over once, however many failing probes were in flight; not probed after it exited.
    assert AuditEntry.objects.filter(action="failover").count() == 1
    assert ProbeResult.objects.filter(instance=bad, ok=False).count() <= 4


def test_rollups_count_up_down_slow_and_leave_maintenance_out(db: None) -> None:
    svc = make_service("rolled", latency_objective_ms=100)
    inst = Instance.objects.create(service=svc, driver="process", state="running")
    now = timezone.now().replace(second=30)
    rows = [(True, 20.0, False)] * 6 + [(True, 250.0, False)] * 2 + [(False, 1.0, False)] * 2 + [(False, 1.0, True)] * 5
    ProbeResult.objects.bulk_create([ProbeResult(service=svc, instance=inst, at=now, ok=ok, latency_ms=ms,
                                                 in_maintenance=m) for ok, ms, m in rows])
    assert rollups.rollup_recent(now) == 1
    r = ProbeRollup.objects.get(service=svc)
    assert (r.total, r.up, r.down, r.slow, r.excluded) == (10, 8, 2, 2, 5)
    assert r.p50_ms == 20.0 and r.p95_ms == 250.0 and sum(r.hist) == 8
    # Recomputing is idempotent (the controller re-rolls the current minute as probes arrive).
    rollups.rollup_recent(now)
    assert ProbeRollup.objects.count() == 1


def test_raw_results_are_pruned_after_the_window(db: None) -> None:
    svc = make_service("pruned")
    inst = Instance.objects.create(service=svc, driver="process", state="running")
    old = timezone.now() - timedelta(hours=3)
    ProbeResult.objects.create(service=svc, instance=inst, at=old, ok=True, latency_ms=1)
    ProbeResult.objects.create(service=svc, instance=inst, at=timezone.now(), ok=True, latency_ms=1)
    assert rollups.prune()["raw"] == 1 and ProbeResult.objects.count() == 1


def test_results_of_an_instance_deleted_meanwhile_are_dropped_alone(transactional_db: None) -> None:
    svc = make_service("deleted")
    kept, gone = (Instance.objects.create(service=svc, driver="process", state="running") for _ in range(2))
    gone_id = gone.pk
    gone.delete()
    now = timezone.now()
    probes.store_results([(svc.pk, kept.pk, probes.Probe(True, 1.0, 200), False, now),
                          (svc.pk, gone_id, probes.Probe(True, 1.0, 200), False, now)])
    assert list(ProbeResult.objects.values_list("instance_id", flat=True)) == [kept.pk]


# --- real instances ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_failing_instance_is_failed_over_with_probe_evidence_and_replaced(transactional_db: None,
                                                                           stop_local_instances) -> None:
    svc = make_service()
    (inst,) = running_instance(svc)
    with Running():
        wait_for(lambda: Instance.objects.filter(pk=inst.pk, health="up", probe_successes__gte=1).exists(),
                 timeout=20, interval=0.1, message="a good probe")

        # Inside a maintenance window: failures are recorded (and excluded) but nothing is failed over.
        now = timezone.now()
        window = health_actions.create_maintenance_window(
            svc, starts_at=now - timedelta(seconds=5), ends_at=now + timedelta(hours=1), reason="planned",
            actor="system:test")
        fault(inst, "fail")
        wait_for(lambda: ProbeResult.objects.filter(instance=inst, in_maintenance=True, ok=False).count() >= 3,
                 timeout=20, interval=0.1, message="three failed probes in maintenance")
        inst.refresh_from_db()
        assert inst.state == "running" and inst.health == "down" and inst.probe_failures >= 3
        assert not AuditEntry.objects.filter(action="failover").exists()

        health_actions.end_maintenance_window(window, actor="system:test")
        assert not MaintenanceWindow.objects.filter(ends_at__gt=timezone.now()).exists()
        entry = wait_for(lambda: AuditEntry.objects.filter(action="failover").first(), timeout=20, interval=0.1,
                         message="the fail-over after the window")
        inst.refresh_from_db()
        assert inst.state == "exited" and inst.health == "down"
        assert entry.actor == "system:monitor" and entry.payload["instance"] == inst.pk
        ev = entry.payload["evidence"]
        assert ev["consecutive_failures"] >= 2 and ev["threshold"] == 2
        assert ev["probes"][0]["status"] == 503 and not ev["probes"][0]["ok"]
        wait_for(lambda: not alive(int(inst.ref)), timeout=10, message="the failed instance stopped")

        # The reconciler sees live < desired and starts a replacement, which probes healthy.
        (replacement,) = running_instance(svc)
        assert replacement.pk != inst.pk
        wait_for(lambda: Instance.objects.filter(pk=replacement.pk, health="up").exists(), timeout=20,
                 interval=0.1, message="the replacement probed healthy")
    assert AuditEntry.objects.filter(action="failover").count() == 1


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_monitor_rolls_up_what_the_probe_loop_stored(transactional_db: None, stop_local_instances,
                                                        settings) -> None:
    """The two loops as the controller and the probe process run them, in process: the monitor's
    roll-ups read what the probes stored, and a failing instance is replaced."""
    settings.HMS_SLA_EVAL_SECONDS = 1
    svc = make_service("looped")
    (inst,) = running_instance(svc)
    monitor = Loop("monitor", 0.1)  # the controller's monitor loop: roll-ups, SLOs, autoscaler

    def step_until(predicate, message: str):
        def once():
            monitor.run_once()
            return predicate()
        return wait_for(once, timeout=20, interval=0.1, message=message)

    with Running():
        step_until(lambda: ProbeRollup.objects.filter(service=svc, up__gt=0).exists(), "a roll-up of good probes")
        fault(inst, "fail")
        entry = step_until(lambda: AuditEntry.objects.filter(action="failover", payload__instance=inst.pk).first(),
                           "fail-over")
        assert entry.payload["evidence"]["consecutive_failures"] >= 2
        step_until(lambda: ProbeRollup.objects.filter(service=svc, down__gt=0).exists(), "a roll-up of failures")
    (replacement,) = running_instance(svc)
    assert replacement.pk != inst.pk
