"""The route × persona permission table.

Every URL pattern of hmsmgmt.urls and every operation of /mgmt/openapi.json must have a row here;
`test_every_route_is_in_the_table` fails when a new route is added without one. Each row says what
anonymous, dave (no access), bob (operator), carol (analyst) and alice (admin) get, and for routes
that take a run, what carol gets on *another user's* run ("other": an IDOR attempt, always 404).

Each (row, persona) case runs on fresh data, as that user would call it: pages through a session
with the CSRF token sent the way htmx sends it (X-CSRFToken), the API with a bearer token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from audit.models import AuditEntry
from fleet.models import Service
from health import actions as health_actions
from hmsmgmt.api import api as ninja_api
from slo import actions as slo_actions
from tests.conftest import api
from workflows.models import WorkflowRun

pytestmark = pytest.mark.django_db
PERSONAS = ("anon", "dave", "bob", "carol", "alice")
CSRF = "a" * 32  # an unmasked CSRF secret: cookie and header must match, as htmx sends them


@dataclass
class Ctx:
    carol_run: WorkflowRun
    bob_run: WorkflowRun
    other: bool = False  # the IDOR column: carol's request aimed at bob's run
    obj: Any = None  # what a row's setup created (an incident, a maintenance window, a channel)

    @property
    def run(self) -> WorkflowRun:
        return self.bob_run if self.other else self.carol_run


@dataclass
class Row:
    method: str
    path: Callable[[Ctx], str]
    expect: dict[str, int]  # persona (and "other") -> status
    data: dict[str, Any] | Callable[[Ctx], dict[str, Any]] | None = None  # a callable: built after setup
    setup: Callable[[Ctx], None] | None = None
    htmx: bool = False
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def body(self, ctx: Ctx) -> dict[str, Any] | None:
        """What the row posts (after its setup: a callable reads the data it made)."""
        return self.data(ctx) if callable(self.data) else self.data


def page(anon: int, dave: int, bob: int, carol: int, alice: int, other: int | None = None) -> dict[str, int]:
    d = dict(zip(PERSONAS, (anon, dave, bob, carol, alice), strict=True))
    if other is not None:
        d["other"] = other
    return d


def fail_run(ctx: Ctx) -> None:
    WorkflowRun.objects.filter(pk__in=[ctx.carol_run.pk, ctx.bob_run.pk]).update(status=WorkflowRun.Status.FAILED)


def pause_runs(ctx: Ctx) -> None:
    WorkflowRun.objects.filter(pk__in=[ctx.carol_run.pk, ctx.bob_run.pk]).update(status=WorkflowRun.Status.PAUSED)


def incident(ctx: Ctx) -> None:

    ctx.obj = slo_actions.open_incident(Service.objects.get(name="HMS-SVC"), kind="availability", severity="page",
                                        title="down", evidence={})


def window(ctx: Ctx) -> None:

    now = timezone.now()
    ctx.obj = health_actions.create_maintenance_window(Service.objects.get(name="HMS-SVC"),
                                                    starts_at=now - timedelta(minutes=1),
                                                    ends_at=now + timedelta(hours=1), reason="t", actor="system:test")


def channel(ctx: Ctx) -> None:
    from slo.models import AlertChannel

    ctx.obj = slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target="http://127.0.0.1:9/"),
                                             actor="system:test")


def swarm_node(ctx: Ctx) -> None:
    from fleet.models import SwarmNode

    now = timezone.now()
    ctx.obj, _ = SwarmNode.objects.get_or_create(node_id="n" * 25, defaults=dict(
        hostname="node-1", role="manager", state="ready", availability="active", state_since=now, seen_at=now))


def schedule(ctx: Ctx, *, paused: bool = False) -> None:
    """Bob's schedule of analyticsReport (carol sees the flow, so the schedule: 403, not 404)."""
    from schedules import actions as schedule_actions

    bob = ctx.bob_run.actor
    ctx.obj = schedule_actions.create_schedule(
        WorkflowRun.objects.get(pk=ctx.bob_run.pk).definition, {"interval_seconds": 3600, "enabled": not paused},
        owner=bob, actor=bob)


def carol_may_change(ctx: Ctx) -> None:
    """Carol (analyst) gets view + change on HMS-SVC, not scale; its autoscaler is on."""
    from guardian.shortcuts import assign_perm

    from autoscaling.models import AutoscaleSettings

    svc = Service.objects.get(name="HMS-SVC")
    assign_perm("fleet.view_service", ctx.carol_run.actor, svc)
    assign_perm("fleet.change_service", ctx.carol_run.actor, svc)
    AutoscaleSettings.objects.filter(pk=svc.pk).update(autoscale_enabled=True, min_instances=1, max_instances=4)


def settings_form(**changes: Any) -> Callable[[Ctx], dict[str, Any]]:
    """HMS-SVC's whole SLA-page settings form as it is now, with `changes`."""

    def build(ctx: Ctx) -> dict[str, Any]:
        from console.forms import ServiceSettings

        current = ServiceSettings(Service.objects.get(name="HMS-SVC")).fields_dict()
        data = {k: ("" if v is None else "1" if v is True else v) for k, v in current.items() if v is not False}
        return data | changes

    return build


SCHEDULE_FORM = {"interval_seconds": "3600", "timezone": "UTC", "data": "{}", "missed_policy": "once",
                 "missed_bound": "10", "overlap_policy": "skip"}


# --- pages: keyed by the URL pattern as the resolver spells it ------------------------------------
PAGES: dict[str, list[Row]] = {
    "": [Row("GET", lambda c: "/", page(302, 200, 200, 200, 200))],
    "services/<str:name>/": [
        Row("GET", lambda c: "/services/HMS-SVC/", page(302, 404, 200, 404, 200)),
        Row("GET", lambda c: "/services/no-such-service/", page(302, 404, 404, 404, 404)),
    ],
    "services/<str:name>/scale/": [
        Row("POST", lambda c: "/services/HMS-SVC/scale/", page(302, 404, 200, 404, 200), {"instances": "0"},
            htmx=True),
    ],
    "flows/": [Row("GET", lambda c: "/flows/", page(302, 200, 200, 200, 200))],
    "runs/": [Row("GET", lambda c: "/runs/", page(302, 200, 200, 200, 200))],
    # The flow page: schedules and run history (schedules/views.py); managing a schedule takes the
    # run permission on its flow to create one, and being its owner (or an admin) to change it.
    "flows/<str:flow_id>/": [
        Row("GET", lambda c: "/flows/analyticsReport/", page(302, 404, 200, 200, 200), setup=schedule),
        Row("GET", lambda c: "/flows/exportPatientData/", page(302, 404, 200, 404, 200)),
        Row("GET", lambda c: "/flows/noSuchFlow/", page(302, 404, 404, 404, 404)),
    ],
    "flows/<str:flow_id>/schedules/": [
        Row("POST", lambda c: "/flows/analyticsReport/schedules/", page(302, 404, 302, 302, 302), SCHEDULE_FORM),
        Row("POST", lambda c: "/flows/analyticsReport/schedules/", page(302, 404, 400, 400, 400),
            SCHEDULE_FORM | {"interval_seconds": "", "cron": "61 * * * *"}, notes="a bad cron: 400 naming it"),
        Row("POST", lambda c: "/flows/exportPatientData/schedules/", page(302, 404, 302, 404, 302), SCHEDULE_FORM),
    ],
    "schedules/<int:schedule_id>/edit/": [
        Row("GET", lambda c: f"/schedules/{c.obj.pk}/edit/", page(302, 404, 200, 403, 200), setup=schedule),
        Row("POST", lambda c: f"/schedules/{c.obj.pk}/edit/", page(302, 404, 302, 403, 302),
            SCHEDULE_FORM | {"interval_seconds": "60"}, setup=schedule),
        Row("GET", lambda c: "/schedules/999999/edit/", page(302, 404, 404, 404, 404)),
    ],
    "schedules/<int:schedule_id>/pause/": [
        Row("POST", lambda c: f"/schedules/{c.obj.pk}/pause/", page(302, 404, 302, 403, 302), setup=schedule),
    ],
    "schedules/<int:schedule_id>/resume/": [
        Row("POST", lambda c: f"/schedules/{c.obj.pk}/resume/", page(302, 404, 302, 403, 302),
            setup=lambda c: schedule(c, paused=True)),
    ],
    "schedules/<int:schedule_id>/delete/": [
        Row("POST", lambda c: f"/schedules/{c.obj.pk}/delete/", page(302, 404, 302, 403, 302), setup=schedule),
        Row("POST", lambda c: "/schedules/999999/delete/", page(302, 404, 404, 404, 404)),
    ],
    # SLA monitoring, incidents, maintenance, overrides (services/views_sla.py)
    "sla/": [Row("GET", lambda c: "/sla/", page(302, 200, 200, 200, 200))],
    "sla/channels/": [
        # A public address (a private one is a 400 unless HMS_OUTBOUND_ALLOW names it).
        Row("POST", lambda c: "/sla/channels/", page(302, 403, 403, 403, 302),
            {"name": "ops", "kind": "webhook", "target": "https://93.184.215.14/hook"}),
        # For one service: unseen is a 404 before any permission is asked (carol, dave).
        Row("POST", lambda c: "/sla/channels/", page(302, 404, 403, 404, 302),
            {"name": "ops", "kind": "webhook", "target": "https://93.184.215.14/hook", "service": "HMS-SVC"}),
    ],
    "sla/channels/<int:channel_id>/delete/": [
        # Channels carry model-level permissions only (no per-object scope): 403, not 404.
        Row("POST", lambda c: f"/sla/channels/{c.obj.pk}/delete/", page(302, 403, 403, 403, 302), setup=channel),
        Row("POST", lambda c: "/sla/channels/999999/delete/", page(302, 404, 404, 404, 404)),
    ],
    "incidents/<int:incident_id>/ack/": [
        Row("POST", lambda c: f"/incidents/{c.obj.pk}/ack/", page(302, 404, 302, 404, 302), setup=incident),
        Row("POST", lambda c: "/incidents/999999/ack/", page(302, 404, 404, 404, 404)),
    ],
    "maintenance/<int:window_id>/end/": [
        Row("POST", lambda c: f"/maintenance/{c.obj.pk}/end/", page(302, 404, 302, 404, 302), setup=window),
        Row("POST", lambda c: "/maintenance/999999/end/", page(302, 404, 404, 404, 404)),
    ],
    "services/<str:name>/sla/": [Row("GET", lambda c: "/services/HMS-SVC/sla/", page(302, 404, 200, 404, 200))],
    "services/<str:name>/sla/settings/": [
        # Needs services.change_service (admins); an empty form is a 400 with the reason.
        Row("POST", lambda c: "/services/HMS-SVC/sla/settings/", page(302, 404, 403, 404, 400), {}),
        # change without scale (carol here): the bounds of a running autoscaler are scaling, a 403...
        Row("POST", lambda c: "/services/HMS-SVC/sla/settings/", page(302, 404, 403, 403, 302),
            settings_form(max_instances="40"), setup=carol_may_change),
        # ...the rest of the form is hers (tests/autoscaling/test_scale_right.py).
        Row("POST", lambda c: "/services/HMS-SVC/sla/settings/", page(302, 404, 403, 302, 302),
            settings_form(failure_threshold="5"), setup=carol_may_change),
    ],
    "services/<str:name>/autoscale/": [
        Row("GET", lambda c: "/services/HMS-SVC/autoscale/", page(302, 404, 200, 404, 200), htmx=True),
    ],
    "services/<str:name>/maintenance/": [
        Row("POST", lambda c: "/services/HMS-SVC/maintenance/", page(302, 404, 302, 404, 302), {"minutes": "30"}),
    ],
    "services/<str:name>/override/": [
        Row("POST", lambda c: "/services/HMS-SVC/override/", page(302, 404, 302, 404, 302),
            {"instances": "0", "ttl_minutes": "0"}),
    ],
    "services/<str:name>/override/clear/": [
        Row("POST", lambda c: "/services/HMS-SVC/override/clear/", page(302, 404, 302, 404, 302)),
    ],
    "runs/launch/": [
        Row("POST", lambda c: "/runs/launch/", page(302, 404, 302, 302, 302), {"flowId": "analyticsReport"}),
        Row("POST", lambda c: "/runs/launch/", page(302, 404, 302, 404, 302), {"flowId": "exportPatientData"}),
    ],
    # Bulk: each run is checked on its own; a user who may see nothing gets "0 cancelled".
    "runs/bulk/": [
        Row("POST", lambda c: "/runs/bulk/", page(302, 302, 302, 302, 302), {"op": "cancel", "scope": "filter"}),
    ],
    "runs/<int:run_id>/": [Row("GET", lambda c: f"/runs/{c.run.pk}/", page(302, 404, 200, 200, 200, other=404))],
    "runs/<int:run_id>/cancel/": [
        Row("POST", lambda c: f"/runs/{c.run.pk}/cancel/", page(302, 404, 302, 302, 302, other=404)),
    ],
    "runs/<int:run_id>/retry/": [
        Row("POST", lambda c: f"/runs/{c.run.pk}/retry/", page(302, 404, 302, 302, 302, other=404), setup=fail_run),
    ],
    # Pause needs `pause` on the run (operators have it; an owner pauses their own run).
    "runs/<int:run_id>/pause/": [
        Row("POST", lambda c: f"/runs/{c.run.pk}/pause/", page(302, 404, 302, 302, 302, other=404)),
    ],
    "runs/<int:run_id>/resume/": [
        Row("POST", lambda c: f"/runs/{c.run.pk}/resume/", page(302, 404, 302, 302, 302, other=404),
            setup=pause_runs),
    ],
    "runs/<int:run_id>/steps/<str:name>/approve/": [
        Row("POST", lambda c: f"/runs/{c.run.pk}/steps/crunch/approve/", page(302, 404, 302, 302, 302, other=404),
            {"approve": "true"}),
        Row("POST", lambda c: f"/runs/{c.run.pk}/steps/nope/approve/", page(302, 404, 404, 404, 404, other=404),
            {"approve": "true"}),
    ],
    "audit/": [Row("GET", lambda c: "/audit/", page(302, 403, 403, 403, 200))],
    "system/": [Row("GET", lambda c: "/system/", page(302, 403, 403, 403, 200), notes="staff only")],
    # Nodes: seeing them needs fleet.view_swarmnode (operators), acting fleet.manage_nodes (admins).
    "nodes/": [Row("GET", lambda c: "/nodes/", page(302, 403, 200, 403, 200), setup=swarm_node)],
    "nodes/<str:hostname>/availability/": [
        # Without confirm: the preflight only (nothing changes on the engine).
        Row("POST", lambda c: "/nodes/node-1/availability/", page(302, 403, 403, 403, 200), {"availability": "drain"},
            setup=swarm_node, htmx=True),
        Row("POST", lambda c: "/nodes/no-such-node/availability/", page(302, 403, 404, 403, 404),
            {"availability": "drain"}, htmx=True),
    ],
    "audit/<int:pk>/": [
        Row("GET", lambda c: f"/audit/{AuditEntry.objects.order_by('id').first().pk}/",
            page(302, 403, 403, 403, 200)),
    ],
    "audit/verify/": [Row("POST", lambda c: "/audit/verify/", page(302, 403, 403, 403, 302))],
    "audit/verify/<int:pk>/": [Row("GET", lambda c: "/audit/verify/999999/", page(302, 403, 403, 403, 404))],
    "policies/preflight/": [
        # htmx without a session: 401 with HX-Redirect to sign-in (tested in tests/policies).
        Row("GET", lambda c: "/policies/preflight/?action=scale&service=HMS-SVC&instances=1",
            page(401, 404, 200, 404, 200), htmx=True),
        Row("GET", lambda c: "/policies/preflight/?action=run&flowId=analyticsReport",
            page(302, 404, 200, 200, 200)),
    ],
    "login/": [Row("GET", lambda c: "/login/", page(200, 302, 302, 302, 302), notes="signed in: sent on")],
    "logout/": [Row("POST", lambda c: "/logout/", page(302, 302, 302, 302, 302))],
    # Probes carry no credentials: the same answer for everyone (tests/console/test_health.py).
    "healthz": [Row("GET", lambda c: "/healthz", page(200, 200, 200, 200, 200), notes="public probe")],
    "readyz": [Row("GET", lambda c: "/readyz", page(200, 200, 200, 200, 200), notes="public probe")],
    # Not a session page: a bearer token or an allowed address (tests/console/test_metrics.py); with
    # neither configured (production default) it is closed to everyone, superusers included.
    "metrics": [Row("GET", lambda c: "/metrics", page(403, 403, 403, 403, 403))],
}

# --- the REST API: keyed by OpenAPI (METHOD, path) ---------------------------------------------
API: dict[tuple[str, str], list[Row]] = {
    ("POST", "/mgmt/scale"): [
        Row("POST", lambda c: "/mgmt/scale", page(401, 404, 200, 404, 200), {"service": "HMS-SVC", "instances": 0}),
    ],
    ("GET", "/mgmt/services"): [Row("GET", lambda c: "/mgmt/services", page(401, 200, 200, 200, 200))],
    ("GET", "/mgmt/services/{name}"): [
        Row("GET", lambda c: "/mgmt/services/HMS-SVC", page(401, 404, 200, 404, 200)),
    ],
    ("GET", "/mgmt/services/{name}/sla"): [
        Row("GET", lambda c: "/mgmt/services/HMS-SVC/sla", page(401, 404, 200, 404, 200)),
        Row("GET", lambda c: "/mgmt/services/NOPE/sla", page(401, 404, 404, 404, 404)),
    ],
    ("POST", "/mgmt/workflows"): [
        Row("POST", lambda c: "/mgmt/workflows", page(401, 404, 200, 200, 200), {"flowId": "analyticsReport"}),
        Row("POST", lambda c: "/mgmt/workflows", page(401, 404, 200, 404, 200), {"flowId": "exportPatientData"}),
    ],
    ("POST", "/mgmt/workflows/bulk"): [
        Row("POST", lambda c: "/mgmt/workflows/bulk", page(401, 200, 200, 200, 200), {"op": "cancel", "filter": {}}),
        Row("POST", lambda c: "/mgmt/workflows/bulk", page(401, 400, 400, 400, 400), {"op": "cancel"}),
    ],
    ("GET", "/mgmt/workflows"): [Row("GET", lambda c: "/mgmt/workflows", page(401, 200, 200, 200, 200))],
    ("GET", "/mgmt/workflows/{run_id}"): [
        Row("GET", lambda c: f"/mgmt/workflows/{c.run.pk}", page(401, 404, 200, 200, 200, other=404)),
        Row("GET", lambda c: "/mgmt/workflows/999999", page(401, 404, 404, 404, 404)),
    ],
    ("POST", "/mgmt/workflows/{run_id}/cancel"): [
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/cancel", page(401, 404, 200, 200, 200, other=404)),
    ],
    ("POST", "/mgmt/workflows/{run_id}/retry"): [
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/retry", page(401, 404, 200, 200, 200, other=404),
            setup=fail_run),
    ],
    ("POST", "/mgmt/workflows/{run_id}/pause"): [
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/pause", page(401, 404, 200, 200, 200, other=404)),
        # Not paused: whoever may pause gets the 409.
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/pause", page(401, 404, 409, 409, 409, other=404),
            setup=pause_runs),
    ],
    ("POST", "/mgmt/workflows/{run_id}/resume"): [
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/resume", page(401, 404, 200, 200, 200, other=404),
            setup=pause_runs),
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/resume", page(401, 404, 409, 409, 409, other=404)),
    ],
    ("POST", "/mgmt/workflows/{run_id}/steps/{name}/approve"): [
        # analyticsReport's only step is not an approval: whoever may approve gets the 409.
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/steps/crunch/approve",
            page(401, 404, 409, 409, 409, other=404), {"approve": True}),
        Row("POST", lambda c: f"/mgmt/workflows/{c.run.pk}/steps/nope/approve",
            page(401, 404, 404, 404, 404, other=404), {"approve": True}),
    ],
    ("GET", "/mgmt/flows/{flow_id}/schedules"): [
        Row("GET", lambda c: "/mgmt/flows/analyticsReport/schedules", page(401, 404, 200, 200, 200), setup=schedule),
        Row("GET", lambda c: "/mgmt/flows/exportPatientData/schedules", page(401, 404, 200, 404, 200)),
    ],
    ("POST", "/mgmt/flows/{flow_id}/schedules"): [
        Row("POST", lambda c: "/mgmt/flows/analyticsReport/schedules", page(401, 404, 200, 200, 200),
            {"intervalSeconds": 3600}),
        Row("POST", lambda c: "/mgmt/flows/analyticsReport/schedules", page(401, 404, 400, 400, 400),
            {"cron": "61 * * * *"}),
        Row("POST", lambda c: "/mgmt/flows/analyticsReport/schedules", page(401, 404, 400, 200, 200),
            {"intervalSeconds": 3600, "owner": "carol"}, notes="only an admin names another owner"),
        Row("POST", lambda c: "/mgmt/flows/exportPatientData/schedules", page(401, 404, 200, 404, 200),
            {"intervalSeconds": 3600}),
    ],
    ("PATCH", "/mgmt/schedules/{schedule_id}"): [
        Row("PATCH", lambda c: f"/mgmt/schedules/{c.obj.pk}", page(401, 404, 200, 403, 200), {"enabled": False},
            setup=schedule),
        Row("PATCH", lambda c: "/mgmt/schedules/999999", page(401, 404, 404, 404, 404), {"enabled": False}),
    ],
    ("DELETE", "/mgmt/schedules/{schedule_id}"): [
        Row("DELETE", lambda c: f"/mgmt/schedules/{c.obj.pk}", page(401, 404, 200, 403, 200), setup=schedule),
    ],
    ("GET", "/mgmt/flows/{flow_id}/stats"): [
        Row("GET", lambda c: "/mgmt/flows/analyticsReport/stats", page(401, 404, 200, 200, 200)),
        Row("GET", lambda c: "/mgmt/flows/exportPatientData/stats", page(401, 404, 200, 404, 200)),
    ],
    ("GET", "/mgmt/audit"): [Row("GET", lambda c: "/mgmt/audit", page(401, 403, 403, 403, 200))],
    ("GET", "/mgmt/nodes"): [Row("GET", lambda c: "/mgmt/nodes", page(401, 403, 200, 403, 200), setup=swarm_node)],
    ("POST", "/mgmt/nodes/{hostname}/drain"): [
        Row("POST", lambda c: "/mgmt/nodes/node-1/drain?dry_run=true", page(401, 403, 403, 403, 200), setup=swarm_node),
        Row("POST", lambda c: "/mgmt/nodes/no-such-node/drain", page(401, 403, 404, 403, 404)),
    ],
    ("POST", "/mgmt/nodes/{hostname}/activate"): [
        Row("POST", lambda c: "/mgmt/nodes/node-1/activate?dry_run=true", page(401, 403, 403, 403, 200),
            setup=swarm_node),
    ],
    ("GET", "/mgmt/system"): [Row("GET", lambda c: "/mgmt/system", page(401, 403, 403, 403, 200), notes="staff")],
    ("GET", "/mgmt/audit/export"): [Row("GET", lambda c: "/mgmt/audit/export", page(401, 403, 403, 403, 200))],
    ("GET", "/mgmt/audit/{entry_id}"): [
        Row("GET", lambda c: f"/mgmt/audit/{AuditEntry.objects.order_by('id').first().pk}",
            page(401, 403, 403, 403, 200)),
    ],
}

# Routes ninja adds beside the operations; not operations themselves.
API_META: dict[str, list[Row]] = {
    "mgmt/openapi.json": [Row("GET", lambda c: "/mgmt/openapi.json", page(200, 200, 200, 200, 200),
                              notes="the schema is public, like the chapter's client docs")],
    "mgmt/docs": [Row("GET", lambda c: "/mgmt/docs", page(302, 200, 200, 200, 200),
                      notes="a page for people: anonymous is sent to sign in (the schema stays public)")],
    "mgmt/": [Row("GET", lambda c: "/mgmt/", page(404, 404, 404, 404, 404), notes="no root document")],
    "mgmt/<path:rest>": [Row("GET", lambda c: "/mgmt/no/such/endpoint", page(404, 404, 404, 404, 404),
                             notes="unknown API paths answer JSON 404 to everyone")],
}


# --- walking the URLconf ---------------------------------------------------------------------------
def walk(patterns: list, prefix: str = "", ns: str | None = None) -> Iterator[tuple[str, str | None]]:
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from walk(p.url_patterns, prefix + str(p.pattern), p.namespace or ns)
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), ns


def openapi_operations() -> set[tuple[str, str]]:
    schema = ninja_api.get_openapi_schema()
    return {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}


def test_every_route_is_in_the_table() -> None:
    """Add a row to PAGES or API (above) for any route this names: what each persona must get."""
    missing = []
    api_paths = {p.lstrip("/") for _, p in API}
    for route, ns in walk(get_resolver().url_patterns):
        if ns == "admin":
            continue  # covered by test_admin_is_staff_only, generated from the admin registry
        if ns == "mgmt":
            as_openapi = route.replace("<", "{").replace(">", "}")
            if as_openapi not in api_paths and route not in API_META:
                missing.append(f"API route {route!r}")
        elif route not in PAGES:
            missing.append(f"page {route!r}")
    missing += [f"API operation {op}" for op in sorted(openapi_operations() - set(API))]
    assert not missing, "routes with no row in the permission table: " + ", ".join(missing)


def test_every_table_row_still_exists() -> None:
    routes = {route for route, _ in walk(get_resolver().url_patterns)}
    assert set(PAGES) <= routes and set(API_META) <= routes
    assert set(API) <= openapi_operations()


# --- running the table -------------------------------------------------------------------------------
def cases() -> Iterator[Any]:
    groups = [*PAGES.items(), *API_META.items(), *((f"{m} {p}", rows) for (m, p), rows in API.items())]
    for key, rows in groups:
        for i, row in enumerate(rows):
            yield pytest.param(row, id=f"{key or '/'}#{i}")


def call(row: Row, who: str, ctx: Ctx, personas, tokens) -> tuple[str, Any]:
    ctx.other = who == "other"
    user = personas.get("carol" if who == "other" else who)
    if row.setup:
        row.setup(ctx)
    path = row.path(ctx)
    data = row.body(ctx)
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = CSRF
    if path.startswith("/mgmt/"):
        token = tokens["carol" if who == "other" else who] if user else None
        return path, api(client, row.method, path, data, token)
    if user:
        client.force_login(user)
    headers = {"HTTP_X_CSRFTOKEN": CSRF, **({"HTTP_HX_REQUEST": "true"} if row.htmx else {})}
    return path, getattr(client, row.method.lower())(path, data or {}, **headers)


@pytest.mark.parametrize("row", list(cases()))
def test_route_personas(row: Row, ctx: Ctx, personas, tokens) -> None:
    """One row, every persona; each request runs on the same fresh data (a savepoint rolled back
    after it), so one persona's cancel does not change what the next one sees."""
    wrong = []
    for who, expected in row.expect.items():
        with transaction.atomic():
            path, response = call(row, who, ctx, personas, tokens)
            got = response.status_code
            if got != expected:
                wrong.append(f"{who}: {got} (expected {expected}) {response.content[:200]!r}")
            elif path.startswith("/mgmt/") and (expected == 401 or expected >= 403 and expected != 404):
                body = response.json()
                if not (body.get("error") and body.get("detail")):
                    wrong.append(f"{who}: error body without error/detail: {body}")
            elif expected == 302 and who == "anon" and not path.startswith(("/login", "/logout")):
                if not response["Location"].startswith("/login/"):
                    wrong.append(f"{who}: redirected to {response['Location']}, not to sign-in")
            transaction.set_rollback(True)
    assert not wrong, f"{row.method} {row.path(ctx)}:\n  " + "\n  ".join(wrong)


def test_lists_show_only_what_the_user_may_see(ctx: Ctx, personas, tokens, clients) -> None:
    c = clients["anon"]
    assert api(c, "get", "/mgmt/services", token=tokens["dave"]).json() == []
    assert api(c, "get", "/mgmt/services", token=tokens["carol"]).json() == []
    assert {s["name"] for s in api(c, "get", "/mgmt/services", token=tokens["bob"]).json()} == set(
        Service.objects.values_list("name", flat=True))
    assert api(c, "get", "/mgmt/workflows", token=tokens["dave"]).json()["count"] == 0
    mine = api(c, "get", "/mgmt/workflows", token=tokens["carol"]).json()
    assert [r["runId"] for r in mine["items"]] == [ctx.carol_run.pk]
    assert api(c, "get", "/mgmt/workflows", token=tokens["bob"]).json()["count"] == 2
    runs_page = clients["carol"].get("/runs/").content.decode()
    assert f"/runs/{ctx.carol_run.pk}/" in runs_page and f"/runs/{ctx.bob_run.pk}/" not in runs_page
    overview = clients["dave"].get("/").content.decode()
    assert "HMS-SVC" not in overview and "You may not launch any flow." in overview


def test_visible_without_the_action_permission_is_403(ctx: Ctx, personas, tokens, clients) -> None:
    from guardian.shortcuts import assign_perm

    dave, svc = personas["dave"], Service.objects.get(name="HMS-SVC")
    assign_perm("fleet.view_service", dave, svc)
    assert api(clients["anon"], "get", "/mgmt/services/HMS-SVC", token=tokens["dave"]).status_code == 200
    r = api(clients["anon"], "post", "/mgmt/scale", {"service": "HMS-SVC", "instances": 1}, tokens["dave"])
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert clients["dave"].post("/services/HMS-SVC/scale/", {"instances": "1"}).status_code == 403
    assert api(clients["anon"], "get", "/mgmt/services/HMS-API", token=tokens["dave"]).status_code == 404
    assign_perm("fleet.scale_service", dave, svc)
    assert api(clients["anon"], "post", "/mgmt/scale?dry_run=1", {"service": "HMS-SVC", "instances": 1},
               tokens["dave"]).status_code == 200


# --- Django admin, generated from its registry ----------------------------------------------------
ADMIN_MODELS = sorted(f"{m._meta.app_label}_{m._meta.model_name}" for m in admin.site._registry)


@pytest.mark.parametrize("model", ADMIN_MODELS)
def test_admin_is_staff_only(model: str, clients) -> None:
    url = reverse(f"admin:{model}_changelist")
    for who in ("anon", "dave", "bob", "carol"):
        r = clients[who].get(url)
        assert r.status_code == 302 and r["Location"].startswith(reverse("admin:login")), (who, r.status_code)
    assert clients["alice"].get(url).status_code == 200


def test_every_model_of_ours_is_in_admin() -> None:
    from django.apps import apps

    ours = {"accounts", "fleet", "health", "slo", "autoscaling", "workflows", "schedules", "policies", "audit"}
    from fleet.admin import ServiceAdmin

    shown_inline = {"workflows.steprun"}  # on its run's page
    shown_inline |= {i.model._meta.label_lower for i in ServiceAdmin.inlines}  # settings, on the service's page
    assert shown_inline >= {"health.probesettings", "slo.objectives", "autoscaling.autoscalesettings"}
    missing = [m._meta.label_lower for m in apps.get_models()
               if m._meta.app_label in ours and m not in admin.site._registry
               and m._meta.label_lower not in shown_inline]
    assert not missing, f"models with no admin: {missing}"


@pytest.mark.parametrize("model", ["slo_incident", "health_proberesult", "audit_auditverification",
                                   "accounts_loginfailure"])
def test_recorded_state_is_read_only_in_admin(model: str, clients) -> None:
    assert clients["alice"].get(reverse(f"admin:{model}_add")).status_code == 403


def test_service_settings_are_edited_on_the_service_admin_page_and_audited(clients, demo) -> None:
    """The inline rows save through their apps' actions: validated, audited, the service intact."""
    from audit.models import AuditEntry
    from fleet.models import Service

    svc = Service.objects.get(name="HMS-SVC")
    page = clients["alice"].get(f"/admin/fleet/service/{svc.pk}/change/")
    assert page.status_code == 200 and b"probe_settings-0-probe_interval_seconds" in page.content
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k in form.fields}
    for formset in page.context["inline_admin_formsets"]:
        fs = formset.formset
        data |= {f"{fs.prefix}-TOTAL_FORMS": "1", f"{fs.prefix}-INITIAL_FORMS": "1",
                 f"{fs.prefix}-MIN_NUM_FORMS": "0", f"{fs.prefix}-MAX_NUM_FORMS": "1"}
        sub = fs.forms[0]
        data |= {f"{sub.prefix}-{k}": v for k, v in sub.initial.items() if v is not None and k in sub.fields}
        data[f"{sub.prefix}-service"] = svc.pk
    data["probe_settings-0-probe_interval_seconds"] = "3"
    data["autoscale_settings-0-autoscale_enabled"] = "on"
    data = {k: v for k, v in data.items() if v is not False}
    before = AuditEntry.objects.count()
    r = clients["alice"].post(f"/admin/fleet/service/{svc.pk}/change/", data)
    assert r.status_code == 302, r.content[:3000]
    svc = Service.objects.get(pk=svc.pk)
    assert svc.probe_settings.probe_interval_seconds == 3 and svc.autoscale_settings.autoscale_enabled
    changes = [e.payload["changes"] for e in AuditEntry.objects.order_by("id")[before:]
               if e.action == "service.update"]
    assert {"probe_interval_seconds": [2.0, 3.0]} in changes and {"autoscale_enabled": [False, True]} in changes
