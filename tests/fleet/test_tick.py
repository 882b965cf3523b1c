"""The controller's tick at fleet size: one engine listing for every service, services at rest
skipped (no query, no lock, no engine call each), and nothing unsafe about the listing being
older than the lock: real processes, a real /proc."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit import events
from audit.models import AuditEntry
from fleet import actions, jobs, reconcile
from fleet.drivers.process import ProcessDriver
from fleet.models import Instance
from tests.conftest import service_with, wait_for


@pytest.fixture
def counted(monkeypatch):  # type: ignore[no-untyped-def]
    """How often the process driver lists the engine, whole-fleet and per service."""
    calls = {"list_all": 0, "list_instances": 0}
    real_all, real_one = ProcessDriver.list_all, ProcessDriver.list_instances

    def list_all(self, specs):  # type: ignore[no-untyped-def]
        calls["list_all"] += 1
        return real_all(self, specs)

    def list_instances(self, spec):  # type: ignore[no-untyped-def]
        calls["list_instances"] += 1
        return real_one(self, spec)

    monkeypatch.setattr(ProcessDriver, "list_all", list_all)
    monkeypatch.setattr(ProcessDriver, "list_instances", list_instances)
    return calls


def running(svc) -> list[Instance]:  # type: ignore[no-untyped-def]
    return list(svc.instances.filter(state=Instance.State.RUNNING))


@pytest.mark.django_db(transaction=True)
def test_a_tick_lists_once_and_skips_what_is_at_rest(stop_local_instances, counted) -> None:
    busy = [service_with(f"busy{i}") for i in range(2)]
    idle = [service_with(f"idle{i}") for i in range(4)]
    for svc in busy:
        actions.scale_service(svc, 1, actor="system:test")
    tick = jobs.Reconciler()
    tick()
    assert counted["list_all"] == 1
    for svc in busy:
        wait_for(lambda svc=svc: (tick() or True) and len(running(svc)) == 1, timeout=20, interval=0.2,
                 message=f"{svc.name} running")
    counted.update(list_all=0, list_instances=0)
    tick()
    assert (tick.last_pass["services"], tick.last_pass["at_rest"], tick.last_pass["converged"]) == (6, 6, 0)
    assert counted == {"list_all": 1, "list_instances": 0}
    assert all(not svc.instances.exists() for svc in idle)


@pytest.mark.django_db(transaction=True)
def test_a_killed_instance_among_resting_ones_is_failed_over(stop_local_instances) -> None:
    services = [service_with(f"s{i}") for i in range(3)]
    for svc in services:
        actions.scale_service(svc, 1, actor="system:test")
    tick = jobs.Reconciler()
    wait_for(lambda: (tick() or True) and all(len(running(s)) == 1 for s in services), timeout=30, interval=0.2,
             message="one running instance each")
    victim = running(services[1])[0]
    os.kill(int(victim.ref), signal.SIGKILL)
    wait_for(lambda: (tick() or True) and Instance.objects.get(pk=victim.pk).state == Instance.State.EXITED,
             timeout=10, interval=0.1, message="the kill noticed by the tick")
    assert AuditEntry.objects.filter(action=events.FAILOVER).count() == 1
    wait_for(lambda: (tick() or True) and len(running(services[1])) == 1, timeout=20, interval=0.2,
             message="a replacement running")
    assert all(len(running(s)) == 1 for s in services)


@pytest.mark.django_db(transaction=True)
def test_an_instance_started_after_the_listing_is_not_taken_for_dead(stop_local_instances) -> None:
    svc = service_with("web")
    actions.scale_service(svc, 1, actor="system:test")
    st = reconcile.converge_now(svc, wait=True)
    assert st.running == 1
    view = reconcile.fleet_view()  # the tick's listing, taken before ...
    actions.scale_service(svc, 2, actor="system:test")
    assert reconcile.converge_now(svc, wait=True).running == 2  # ... a web request started one more
    stale = view.listed(next(s for s in view.services if s.pk == svc.pk))
    assert stale is not None and len(stale) == 1
    reconcile.converge(svc.pk, listed=stale)  # the tick's pass, with the older listing
    assert len(running(svc)) == 2
    assert not AuditEntry.objects.filter(action=events.FAILOVER).exists()


@pytest.mark.django_db(transaction=True)
def test_queries_of_a_resting_tick_do_not_grow_with_the_fleet(stop_local_instances) -> None:
    svc = service_with("web")
    actions.scale_service(svc, 1, actor="system:test")
    assert reconcile.converge_now(svc, wait=True).running == 1
    tick = jobs.Reconciler()

    def queries() -> tuple[int, int]:
        tick()
        with CaptureQueriesContext(connection) as ctx:
            tick()
        assert tick.last_pass["converged"] == 0
        reads = [q for q in ctx.captured_queries if q["sql"].startswith("SELECT")]
        # The rest is the changed CPU figures, when there are any: one bulk update in a transaction
        # (with PostgreSQL's SET LOCAL synchronous_commit and the savepoint statements around it).
        return len(reads), len(ctx.captured_queries) - len(reads)

    small = queries()
    for i in range(25):
        service_with(f"more{i}")
    reads, writes = queries()
    assert reads == small[0] == 2 and writes <= 4
