"""The REST endpoints, the flow page (schedules, next five fires in both zones, last fires, the run
history chart and stats), load_flows' schedules: section."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import events
from audit.models import AuditEntry
from schedules import actions
from schedules.models import Schedule
from tests.conftest import api
from workflows import actions as workflow_actions
from workflows.history import flow_stats
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db


def test_create_list_patch_delete(flow, personas, tokens, client) -> None:
    bob = tokens["bob"]
    r = api(client, "post", "/mgmt/flows/nightly/schedules", {"cron": "30 2 * * *", "timezone": "Europe/Berlin",
                                                              "data": {"d": 1}, "overlapPolicy": "queue"}, bob)
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["owner"] == "bob" and body["overlapPolicy"] == "queue" and len(body["upcoming"]) == 5
    assert body["upcoming"][0]["local"].endswith(("+01:00", "+02:00")) and "T02:30:00" in body["upcoming"][0]["local"]
    sid = body["id"]
    assert [s["id"] for s in api(client, "get", "/mgmt/flows/nightly/schedules", token=bob).json()] == [sid]
    r = api(client, "patch", f"/mgmt/schedules/{sid}", {"enabled": False}, bob)
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["nextFireAt"] is None
    r = api(client, "patch", f"/mgmt/schedules/{sid}", {"intervalSeconds": 5, "cron": None, "enabled": True}, bob)
    assert r.status_code == 200 and r.json()["intervalSeconds"] == 5 and r.json()["cron"] is None
    assert r.json()["nextFireAt"] is not None
    assert api(client, "delete", f"/mgmt/schedules/{sid}", token=bob).json() == {"id": sid, "deleted": True}
    assert not Schedule.objects.exists()
    assert [e.action for e in AuditEntry.objects.filter(action__startswith="schedule.").order_by("id")] == [
        events.SCHEDULE_CREATE, events.SCHEDULE_PAUSE, events.SCHEDULE_UPDATE, events.SCHEDULE_DELETE]


@pytest.mark.parametrize(("body", "field"), [
    ({"cron": "61 * * * *"}, "cron"), ({"intervalSeconds": 0}, "intervalSeconds"),
    ({"intervalSeconds": 5, "timezone": "Nowhere/City"}, "timezone"), ({"cron": "* * * * *", "intervalSeconds": 5},
                                                                       "cron"),
    ({"intervalSeconds": 5, "missedBound": 1000}, "missedBound"),
])
def test_bad_input_is_a_400_naming_the_field(flow, personas, tokens, client, body, field) -> None:
    r = api(client, "post", "/mgmt/flows/nightly/schedules", body, tokens["alice"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_schedule" and r.json()["field"] == field
    assert r.json()["detail"].startswith(field)
    assert not Schedule.objects.exists()


@pytest.mark.parametrize(("who", "status"), [("alice", 404), ("bob", 400)])
def test_an_unknown_owner_is_a_404_for_an_administrator_and_a_400_before_any_lookup_for_others(
        flow, personas, tokens, client, who, status) -> None:
    r = api(client, "post", "/mgmt/flows/nightly/schedules", {"intervalSeconds": 5, "owner": "nobody"}, tokens[who])
    assert r.status_code == status and r.json()["field"] == "owner"
    assert not Schedule.objects.exists()


@pytest.mark.parametrize("body", [{"intervalSeconds": "5"}, {"intervalSeconds": 5, "color": "red"},
                                  {"intervalSeconds": 5, "missedPolicy": "sometimes"}, {"intervalSeconds": 5.5}])
def test_wrong_types_and_unknown_names_are_400(flow, personas, tokens, client, body) -> None:
    r = api(client, "post", "/mgmt/flows/nightly/schedules", body, tokens["alice"])
    assert r.status_code == 400 and r.json()["detail"]
    assert not Schedule.objects.exists()


def test_the_flow_page_lists_schedules_and_their_fires(flow, personas, clients) -> None:
    alice = personas["alice"]
    s = actions.create_schedule(flow, {"cron": "0 6 * * *", "timezone": "Asia/Kolkata"}, owner=alice, actor=alice)
    Schedule.objects.filter(pk=s.pk).update(next_fire_at=timezone.now() - timedelta(seconds=1))
    s.refresh_from_db()
    actions.fire(s, s.next_fire_at, now=timezone.now(), grace=timedelta(seconds=2))
    run = WorkflowRun.objects.get()
    page = clients["bob"].get("/flows/nightly/").content.decode()
    assert f'data-schedule="{s.pk}"' in page and "0 6 * * *" in page and "Asia/Kolkata" in page
    assert page.count("IST") >= 5 and "(00:30:00 UTC)" in page  # 06:00 in Kolkata is 00:30 UTC
    assert f"/runs/{run.pk}/" in page and "started" in page
    assert "pause" not in page.split(f'data-schedule="{s.pk}"')[1].split("</tr>")[0]  # not bob's: no buttons
    mine = clients["alice"].get("/flows/nightly/").content.decode()
    assert "pause" in mine and "<svg" in mine


def test_the_page_form_refuses_a_bad_zone_naming_it(flow, personas, clients) -> None:
    r = clients["bob"].post("/flows/nightly/schedules/", {"interval_seconds": "10", "timezone": "Mars/Base",
                                                          "missed_policy": "once", "missed_bound": "10",
                                                          "overlap_policy": "skip", "data": "{}"})
    assert r.status_code == 400 and "Unknown time zone" in r.content.decode() and not Schedule.objects.exists()


def test_pause_and_resume_from_the_page(flow, personas, clients) -> None:
    bob = personas["bob"]
    s = actions.create_schedule(flow, {"interval_seconds": 60}, owner=bob, actor=bob)
    assert clients["bob"].post(f"/schedules/{s.pk}/pause/").status_code == 302
    s.refresh_from_db()
    assert not s.enabled and s.next_fire_at is None
    assert clients["carol"].post(f"/schedules/{s.pk}/resume/").status_code == 404  # she cannot see the flow
    assert clients["bob"].post(f"/schedules/{s.pk}/resume/").status_code == 302
    s.refresh_from_db()
    assert s.enabled and s.next_fire_at is not None


def _runs(flow: WorkflowDefinition, spec: list[tuple[str, float, float]]) -> None:
    """(status, run seconds, slow-step seconds) per run, finished a day ago."""
    now = timezone.now() - timedelta(days=1)
    for status, seconds, slow in spec:
        run = workflow_actions.start_run(flow, {}, actor=User.objects.get(username="alice")).run
        assert run is not None
        start = now - timedelta(seconds=seconds)
        WorkflowRun.objects.filter(pk=run.pk).update(status=status, started_at=start, finished_at=now)
        StepRun.objects.filter(run=run).update(status="succeeded", started_at=start,
                                               finished_at=start + timedelta(seconds=slow))


def test_stats_percentiles_success_rate_and_the_slow_step(flow, personas, tokens, client) -> None:
    _runs(flow, [("succeeded", s, s / 2) for s in range(1, 20)] + [("failed", 100.0, 1.0)])
    WorkflowRun.objects.filter(pk=WorkflowRun.objects.order_by("id").first().pk).update(
        finished_at=timezone.now() - timedelta(days=10))  # outside 7 days, inside 30
    with CaptureQueriesContext(connection) as queries:
        stats = flow_stats("nightly")
    assert len(queries) == 4
    seven, thirty = stats["windows"]
    assert (seven["runs"], thirty["runs"]) == (19, 20)
    assert thirty["successRate"] == 0.95 and seven["successRate"] == round(18 / 19, 4)
    assert thirty["p50Seconds"] == 10.0 and thirty["p95Seconds"] == 19.0
    assert [s["name"] for s in stats["steps"]] == ["s"] and stats["steps"][0]["slowest"]
    assert [r["status"] for r in stats["runs"]][-1] == "failed"  # oldest first, the newest last
    r = api(client, "get", "/mgmt/flows/nightly/stats", token=tokens["bob"])
    assert r.status_code == 200 and r.json()["windows"][1]["p95Seconds"] == 19.0


def test_more_runs_same_number_of_queries(flow, personas) -> None:
    _runs(flow, [("succeeded", 1.0, 0.5)] * 3)
    with CaptureQueriesContext(connection) as few:
        flow_stats("nightly")
    _runs(flow, [("succeeded", 1.0, 0.5)] * 30)
    with CaptureQueriesContext(connection) as many:
        flow_stats("nightly")
    assert len(few) == len(many)


def test_the_chart_colours_each_run_by_status(flow, personas, clients) -> None:
    _runs(flow, [("succeeded", 2.0, 1.0), ("failed", 4.0, 1.0), ("cancelled", 1.0, 0.5)])
    page = clients["alice"].get("/flows/nightly/").content.decode()
    assert page.count("<rect ") == 3
    for status in ("succeeded", "failed", "cancelled"):
        assert f'data-status="{status}"' in page
    assert "<script" not in page.split('id="history"')[1].split("</section>")[0]


FLOW_FILE = """
slug: scheduledFlow
name: scheduled
steps: [{name: a, action: noop}]
schedules:
  - name: nightly
    cron: "30 2 * * *"
    timezone: Europe/Berlin
    owner: bob
    data: {dataset: daily}
    overlap: queue
  - name: often
    interval: 10
    owner: alice
    missed: each
    missed_bound: 3
"""


def test_load_flows_accepts_schedules(tmp_path: Path, personas) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(FLOW_FILE)
    call_command("load_flows", str(f))
    got = {s.name: s for s in Schedule.objects.select_related("owner")}
    assert got["nightly"].owner.username == "bob" and got["nightly"].overlap_policy == "queue"
    assert got["nightly"].data == {"dataset": "daily"} and got["often"].interval_seconds == 10
    assert got["often"].missed_bound == 3 and got["often"].next_fire_at is not None
    f.write_text(FLOW_FILE.replace('"30 2 * * *"', '"45 3 * * *"'))
    call_command("load_flows", str(f))  # updated in place, not a second schedule
    assert Schedule.objects.count() == 2 and Schedule.objects.get(name="nightly").cron == "45 3 * * *"


@pytest.mark.parametrize(("change", "message"), [
    (('"30 2 * * *"', '"99 2 * * *"'), "schedule 'nightly': cron"),
    (("owner: bob", "owner: nobody"), "owner must name an existing user"),
    (("overlap: queue", "overlap: sometimes"), "overlap_policy"),
    (("    missed_bound: 3", "    color: red"), "unknown keys color"),
])
def test_load_flows_refuses_bad_schedules_and_saves_nothing(tmp_path: Path, personas, change, message) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(FLOW_FILE.replace(*change))
    with pytest.raises(CommandError, match=message):
        call_command("load_flows", str(f))
    assert not Schedule.objects.exists() and not WorkflowDefinition.objects.filter(slug="scheduledFlow").exists()


def test_load_flows_refuses_an_owner_who_may_not_run_the_flow(tmp_path: Path, personas) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(FLOW_FILE.replace("owner: bob", "owner: dave"))
    with pytest.raises(CommandError, match="dave may not run flow 'scheduledFlow'"):
        call_command("load_flows", str(f))
    assert not WorkflowDefinition.objects.filter(slug="scheduledFlow").exists()
