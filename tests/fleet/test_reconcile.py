"""Reconciliation: crash-loop back-off (exponential, capped, visible), roll-over one at a time on
a spec or driver change, no duplicates when convergers race."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from audit.models import AuditEntry
from fleet import actions, reconcile
from fleet.drivers.process import ProcessDriver
from fleet.models import Instance, Service
from tests.conftest import api, wait_for

CRASH = "{python} -c 'import sys; sys.exit(3)'"


def _set(svc: Service, **fields: object) -> Service:
    svc.refresh_from_db()  # save_service writes every field: never from a stale copy
    before = {k: getattr(svc, k) for k in fields}
    for k, v in fields.items():
        setattr(svc, k, v)
    return actions.save_service(svc, actor="system:test", created=False, before=before)


def _dead(svc: Service) -> bool:
    return all(not o.alive for o in ProcessDriver().list_instances(svc.spec()))


@pytest.mark.django_db
def test_crash_loop_backs_off_exponentially_capped_and_shows_it(clients, tokens, demo, stop_local_instances):
    svc = _set(Service.objects.get(name="analytics"), command=CRASH)
    actions.scale_service(svc, 1, actor="system:test")

    def streak_reaches(n: int):  # type: ignore[no-untyped-def]
        def check() -> bool:
            reconcile.converge(svc.pk, component="test")
            svc.refresh_from_db()
            return svc.failure_streak >= n

        return check

    delays: list[int] = []
    for n in range(1, 6):
        wait_for(streak_reaches(n), timeout=15, interval=0.05, message=f"crash number {n}")
        assert svc.failure_streak == n
        entry = AuditEntry.objects.filter(action="failover", target_id=str(svc.pk)).latest("id")
        assert entry.actor == "system:test" and entry.payload["failure_streak"] == n
        assert "exited" in entry.payload["cause"] or "disappeared" in entry.payload["cause"]
        if n == 1:
            assert svc.backoff_until is None  # one early death is not a loop yet
            continue
        assert reconcile.status(svc).backing_off
        delays.append(round((svc.backoff_until - entry.created_at).total_seconds()))
        # While backing off nothing is started.
        rows = svc.instances.count()
        reconcile.converge(svc.pk, component="test")
        assert svc.instances.count() == rows
        Service.objects.filter(pk=svc.pk).update(backoff_until=timezone.now())  # skip the wait itself
    assert delays == [2, 4, 8, 16]

    # Shown on the service: REST and the detail page.
    Service.objects.filter(pk=svc.pk).update(backoff_until=timezone.now() + timedelta(seconds=30))
    assert api(clients["anon"], "GET", "/mgmt/services/analytics", token=tokens["alice"]).json()["backingOff"]
    page = clients["alice"].get("/services/analytics/").content.decode()
    assert "crash-loop back-off" in page

    # Capped: a long streak never waits more than MAX_BACKOFF_SECONDS.
    Service.objects.filter(pk=svc.pk).update(failure_streak=12, backoff_until=None)
    wait_for(streak_reaches(13), timeout=15, interval=0.05, message="one more crash")
    entry = AuditEntry.objects.filter(action="failover", target_id=str(svc.pk)).latest("id")
    assert round((svc.backoff_until - entry.created_at).total_seconds()) == actions.MAX_BACKOFF_SECONDS


@pytest.mark.django_db
def test_spec_change_rolls_over_one_at_a_time_without_losing_capacity(demo, stop_local_instances):
    svc = Service.objects.get(name="HMS-SVC")
    actions.scale_service(svc, 3, actor="system:test")
    wait_for(lambda: reconcile.converge(svc.pk, component="test").converged, timeout=30, message="3 running")
    old = set(Instance.objects.filter(service=svc, state=Instance.State.RUNNING).values_list("pk", flat=True))
    svc = _set(svc, command=svc.command + " --host 127.0.0.1")
    live_counts, running_counts = [], []

    def rolled() -> bool:
        st = reconcile.converge(svc.pk, component="test")
        live_counts.append(len([o for o in ProcessDriver().list_instances(svc.spec()) if o.alive]))
        running_counts.append(st.running)
        rows = Instance.objects.filter(service=svc, state=Instance.State.RUNNING)
        return st.converged and all(i.spec_version == svc.spec_version for i in rows)

    wait_for(rolled, timeout=60, interval=0.1, message="all instances on the new spec")
    assert max(live_counts) <= 4, "never more than desired + 1 at a time"
    assert min(running_counts) >= 3, "capacity never dropped below desired"
    retired = Instance.objects.filter(pk__in=old)
    assert {i.state for i in retired} == {Instance.State.STOPPED}
    assert {i.exit_reason for i in retired} == {"rolled over to a new spec"}
    assert len([o for o in ProcessDriver().list_instances(svc.spec()) if o.alive]) == 3


@pytest.mark.django_db(transaction=True)
def test_racing_convergers_never_start_duplicates(demo, stop_local_instances):
    svc = Service.objects.get(name="HMS-API")
    actions.scale_service(svc, 3, actor="system:test")
    errors: list[BaseException] = []

    def converge() -> None:
        try:
            for _ in range(5):
                reconcile.converge(svc.pk, component="test")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=converge) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not [e for e in errors if not e.__class__.__name__ == "LockTimeout"], errors
    assert len([o for o in ProcessDriver().list_instances(svc.spec()) if o.alive]) == 3
    assert Instance.objects.filter(service=svc, state__in=Instance.LIVE_STATES).count() == 3


@pytest.mark.docker
@pytest.mark.django_db
def test_driver_change_process_to_docker_rolls_over_one_at_a_time(demo, docker_cleanup, stop_local_instances):
    svc = Service.objects.get(name="HMS-API")
    actions.scale_service(svc, 2, actor="system:test")
    wait_for(lambda: reconcile.converge(svc.pk, component="test").converged, timeout=30, message="2 processes")
    svc = _set(svc, driver=Service.Driver.DOCKER, image=settings.HMS_SAMPLE_IMAGE)
    totals = []

    def moved() -> bool:
        st = reconcile.converge(svc.pk, component="test")
        procs = len([o for o in ProcessDriver().list_instances(svc.spec()) if o.alive])
        containers = len(docker_cleanup.api.containers(filters={"label": "hmsmgmt.service=HMS-API"}))
        totals.append(procs + containers)
        return st.converged and procs == 0 and containers == 2

    wait_for(moved, timeout=90, interval=0.2, message="both instances moved to docker")
    assert max(totals) <= 3
    assert set(Instance.objects.filter(service=svc, state=Instance.State.RUNNING).values_list("driver", flat=True)) == {
        "docker"
    }


@pytest.mark.django_db(transaction=True)
def test_instance_rows_skip_the_wal_flush_but_a_callers_transaction_is_never_relaxed():
    """Instance rows (observed state) are committed without waiting for the WAL flush; a caller's
    transaction, which may hold audit entries, keeps the server's synchronous_commit."""
    from django.db import transaction

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")

    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    default = setting()
    assert default != "off"
    with reconcile._observed_state_write():
        assert setting() == "off"
    assert setting() == default  # SET LOCAL: this transaction only
    with transaction.atomic(), reconcile._observed_state_write():
        assert setting() == default
