"""Probes: the scheduler's cadence, roll-ups, and real sample instances failing their health check
(detected, failed over with evidence, replaced; paused by maintenance)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from audit.models import AuditEntry
from core import stats
from core.loops import Loop
from fleet import actions, reconcile
from fleet.models import Instance, Service
from health import actions as health_actions
from health import probes as monitoring
from health import rollups
from health.models import MaintenanceWindow, ProbeResult, ProbeRollup, ProbeSettings
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


# --- pure parts -----------------------------------------------------------------------------------
def test_histogram_percentiles_use_bucket_upper_bounds() -> None:
    hist = [0] * 20
    hist[stats.bucket_of(3)] = 90  # ≤ 5 ms
    hist[stats.bucket_of(480)] = 10  # ≤ 500 ms
    assert stats.hist_percentile(hist, 0.50) == 5
    assert stats.hist_percentile(hist, 0.95) == 500
    assert stats.hist_percentile([0] * 20, 0.95) is None


def test_probe_http_reports_a_refused_connection_as_down() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        res = monitoring.probe_http("127.0.0.1", port, "/health", 0.5)
    assert not res.ok and res.status is None and res.error


# --- scheduling and roll-ups ---------------------------------------------------------------------------
def test_the_scheduler_keeps_each_service_cadence(db: None) -> None:
    fast = make_service("fast")
    slow = make_service("slow")
    ProbeSettings.objects.filter(pk=slow.pk).update(probe_interval_seconds=5.0)
    a = Instance.objects.create(service=fast, driver="process", state="running", host="127.0.0.1", port=1)
    b = Instance.objects.create(service=slow, driver="process", state="running", host="127.0.0.1", port=2)
    Instance.objects.create(service=fast, driver="process", state="stopped", host="127.0.0.1", port=3)
    sched = monitoring.Scheduler()
    assert sorted(sched.due(100.0)) == [a.pk, b.pk]  # everything once, straight away
    assert sched.due(100.5) == []
    assert sched.due(101.0) == [a.pk]
    assert sched.due(104.9) == [a.pk]  # fell behind: probed once, not three times
    assert sched.due(105.0) == [b.pk]
    Instance.objects.filter(pk=a.pk).update(state="exited")
    assert a.pk not in sched.due(200.0) and a.pk not in sched.next_due


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


def test_a_batch_skips_instances_that_are_no_longer_running(db: None) -> None:
    svc = make_service("gone")
    inst = Instance.objects.create(service=svc, driver="process", state="stopped", host="127.0.0.1", port=9)
    assert monitoring.probe_batch([inst.pk]) == 0 and not ProbeResult.objects.exists()


# --- real instances ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_failing_instance_is_failed_over_with_probe_evidence_and_replaced(db: None, stop_local_instances) -> None:
    svc = make_service()
    (inst,) = running_instance(svc)
    assert monitoring.probe_batch([inst.pk]) == 1
    inst.refresh_from_db()
    assert inst.health == "up" and inst.probe_successes == 1

    fault(inst, "fail")
    # Inside a maintenance window: failures are recorded (and excluded) but nothing is failed over.
    now = timezone.now()
    window = health_actions.create_maintenance_window(svc, starts_at=now - timedelta(seconds=5),
                                               ends_at=now + timedelta(hours=1), reason="planned", actor="system:test")
    for _ in range(3):
        monitoring.probe_batch([inst.pk])
    inst.refresh_from_db()
    assert inst.state == "running" and inst.health == "down" and inst.probe_failures == 3
    assert ProbeResult.objects.filter(instance=inst, in_maintenance=True, ok=False).count() == 3
    health_actions.end_maintenance_window(window, actor="system:test")
    assert not MaintenanceWindow.objects.filter(ends_at__gt=timezone.now()).exists()

    monitoring.probe_batch([inst.pk])
    inst.refresh_from_db()
    assert inst.state == "exited" and inst.health == "down"
    entry = AuditEntry.objects.filter(action="failover").order_by("-id").first()
    assert entry.actor == "system:monitor" and entry.payload["instance"] == inst.pk
    ev = entry.payload["evidence"]
    assert ev["consecutive_failures"] >= 2 and ev["threshold"] == 2
    assert ev["probes"][0]["status"] == 503 and not ev["probes"][0]["ok"]
    wait_for(lambda: not alive(int(inst.ref)), timeout=10, message="the failed instance stopped")

    # A second batch for the same instance (the queue lagged) changes nothing.
    assert monitoring.probe_batch([inst.pk]) == 0
    assert AuditEntry.objects.filter(action="failover").count() == 1

    # The reconciler sees live < desired and starts a replacement, which probes healthy.
    (replacement,) = running_instance(svc)
    assert replacement.pk != inst.pk
    monitoring.probe_batch([replacement.pk])
    replacement.refresh_from_db()
    assert replacement.health == "up"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_controller_loop_probes_inline_when_told_and_fails_over(transactional_db: None, stop_local_instances,
                                                                    settings) -> None:
    """The controller's monitor pass, in process: due probes run (inline here, as they do when the
    task queue is backed up), roll-ups and the SLA follow, and a failing instance is replaced."""
    settings.HMS_PROBES_INLINE = True
    settings.HMS_SLA_EVAL_SECONDS = 1
    svc = make_service("looped")
    (inst,) = running_instance(svc)
    monitor = Loop("monitor", 0.1)  # the controller's monitor loop: fan-out, roll-ups, SLOs, autoscaler

    def step_until(predicate, message: str):
        def once():
            monitor.run_once()
            return predicate()
        return wait_for(once, timeout=20, interval=0.1, message=message)

    step_until(lambda: ProbeRollup.objects.filter(service=svc, up__gt=0).exists(), "a roll-up of good probes")
    fault(inst, "fail")
    entry = step_until(lambda: AuditEntry.objects.filter(action="failover", payload__instance=inst.pk).first(),
                       "fail-over")
    assert entry.payload["evidence"]["consecutive_failures"] >= 2
    (replacement,) = running_instance(svc)
    assert replacement.pk != inst.pk
