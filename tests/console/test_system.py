"""The system page and API: controllers (leader or standby), workers, database, broker, engines
(breakers) and the sealer, for staff only; live-updating; constant queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.actions import record
from console.models import WorkerBeat
from controller.models import LoopBeat
from fleet.models import EngineState
from tests.conftest import api, service_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def state(personas) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    beat = {"host": "ctl-1", "started_at": now - timedelta(hours=1), "last_pass_ms": 42.0, "passes": 9}
    LoopBeat.objects.create(pid=1, loop="tick", beat_at=now, leader=True, since=now - timedelta(minutes=5), **beat)
    LoopBeat.objects.create(pid=2, loop="tick", beat_at=now, **beat)
    LoopBeat.objects.create(pid=1, loop="monitor", beat_at=now - timedelta(minutes=2), leader=True, **beat)
    service_with("web")
    service_with("containers", driver="docker", image="x")
    EngineState.objects.create(engine="docker", state="open", failures=3, last_error="no answer within 1 s",
                               changed_at=now)
    WorkerBeat.objects.create(host="wk-1", pid=7, cluster="hmsmgmt", started_at=now, beat_at=now, busy=True, tasks=5)
    WorkerBeat.objects.create(host="wk-1", pid=8, cluster="hmsmgmt", started_at=now, beat_at=now, tasks=3)
    WorkerBeat.objects.create(host="wk-2", pid=9, cluster="hmsmgmt", started_at=now,
                              beat_at=now - timedelta(minutes=1))  # stopped beating
    with transaction.atomic():
        record("test.entry", actor="system:test", target_type="test", target_id="1")


def test_the_api_tells_leaders_standbys_stale_and_unled_loops(state, clients, tokens) -> None:
    body = api(clients["anon"], "get", "/mgmt/system", token=tokens["alice"]).json()
    roles = {(c["loop"], c["pid"]): (c["leader"], c["fresh"]) for c in body["controllers"]}
    assert roles[("tick", 1)] == (True, True) and roles[("tick", 2)] == (False, True)
    assert roles[("monitor", 1)] == (True, False)  # its leader stopped beating
    assert roles[("sealer", None)] == (False, False)  # nobody runs it
    engines = {e["engine"]: e for e in body["engines"]}
    assert engines["docker"]["breaker"] == "open" and engines["docker"]["services"] == 1
    assert engines["process"]["breaker"] == "closed"
    assert body["database"]["reachable"] and body["broker"]["reachable"]
    assert body["sealer"]["pending"] >= 1 and body["sealer"]["oldestPendingSeconds"] >= 0
    clusters = {(w["cluster"], w["host"]): w for w in body["workers"]}
    assert (clusters[("hmsmgmt", "wk-1")]["workers"], clusters[("hmsmgmt", "wk-1")]["busy"]) == (2, 1)
    assert clusters[("hmsmgmt", "wk-1")]["tasks"] == 8 and clusters[("hmsmgmt", "wk-1")]["fresh"]
    assert clusters[("hmsmgmt", "wk-2")]["workers"] == 0 and not clusters[("hmsmgmt", "wk-2")]["fresh"]
    assert clusters[("alerts", "")]["workers"] == 0  # nobody serves the alerts queue
    assert body["stepsRunning"] == 0
    assert api(clients["anon"], "get", "/mgmt/system", token=tokens["bob"]).status_code == 403


def test_the_page_refreshes_itself_and_is_for_staff(state, clients) -> None:
    body = clients["alice"].get("/system/").content.decode()
    assert 'hx-trigger="every 3s"' in body and "nobody runs it" in body and ">standby<" in body
    assert 'data-engine="docker"' in body and "no answer within 1 s" in body
    partial = clients["alice"].get("/system/", HTTP_HX_REQUEST="true").content.decode()
    assert partial.startswith('{# ') is False and partial.lstrip().startswith('<div id="system"')
    assert clients["bob"].get("/system/").status_code == 403


def test_queries_do_not_grow_with_the_fleet(state, clients) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            clients["alice"].get("/system/")
        return len(ctx.captured_queries)

    small = count()
    for i in range(20):
        service_with(f"more{i}")
    assert count() == small


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_both_worker_clusters_show_with_their_heartbeats(personas, spawn, clients, tokens) -> None:
    from tests.conftest import wait_for

    spawn("qcluster", HMS_Q_WORKERS="2")
    spawn("qcluster", Q_CLUSTER_NAME="alerts")

    def clusters() -> dict[str, dict]:
        body = api(clients["anon"], "get", "/mgmt/system", token=tokens["alice"]).json()
        return {w["cluster"]: w for w in body["workers"] if w["fresh"]}

    seen = wait_for(lambda: (lambda c: c if {"hmsmgmt", "alerts"} <= set(c) else None)(clusters()), timeout=60,
                    interval=0.5, message="both worker clusters beating")
    assert seen["hmsmgmt"]["workers"] == 2 and seen["alerts"]["workers"] == 1
