"""GET /mgmt/services[/{name}] at fleet scale: a constant number of queries whatever the fleet size
(for a superuser, an operator with group-wide rights and a user with per-object grants), limit /
offset / X-Total-Count, bad paging values refused as 400 JSON, and core.permissions.can_many
agreeing with can() object by object."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from audit.models import AuditEntry
from core.permissions import can, can_many
from fleet.models import Instance, Service
from tests.conftest import api

pytestmark = pytest.mark.django_db

RUNNING, STARTING, STOPPING, STOPPED = (Instance.State.RUNNING, Instance.State.STARTING,
                                        Instance.State.STOPPING, Instance.State.STOPPED)


def add_services(start: int, stop: int, *, grant_to: User | None = None) -> list[Service]:
    """Services svc-<i> for i in [start, stop), each with instances in several states: i % 3 + 1
    running, one starting on even i, and a stopped and a stopping one that count as neither.
    grant_to: view on every one and scale on even ones, per object."""
    made = []
    for i in range(start, stop):
        svc = Service.objects.create(name=f"svc-{i:03d}", command="x", desired_instances=i % 4)
        states = [RUNNING] * (i % 3 + 1) + ([STARTING] if i % 2 == 0 else []) + [STOPPED, STOPPING]
        Instance.objects.bulk_create(Instance(service=svc, driver="process", ref=f"{svc.name}-{n}", state=state)
                                     for n, state in enumerate(states))
        if grant_to is not None:
            assign_perm("fleet.view_service", grant_to, svc)
            if i % 2 == 0:
                assign_perm("fleet.scale_service", grant_to, svc)
        made.append(svc)
    return made


def expected(i: int) -> dict[str, Any]:
    return {"name": f"svc-{i:03d}", "driver": "process", "desired": i % 4, "running": i % 3 + 1,
            "starting": 1 if i % 2 == 0 else 0, "backingOff": False, "instances": None}


def queries(client: Client, path: str, **extra: Any) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as ctx:
        resp = client.get(path, **extra)
    assert resp.status_code == 200, resp.content[:300]
    return len(ctx.captured_queries), resp


# --- the list -------------------------------------------------------------------------------------
def test_the_list_is_every_visible_service_by_name_with_its_counts_and_the_total(clients) -> None:
    add_services(0, 5)
    resp = clients["alice"].get("/mgmt/services")
    assert resp.status_code == 200 and resp["X-Total-Count"] == "5"
    assert resp.json() == [expected(i) for i in range(5)]


def test_limit_and_offset_page_through_the_list_in_name_order(clients) -> None:
    add_services(0, 7)
    c = clients["alice"]
    first = c.get("/mgmt/services?limit=3")
    assert [s["name"] for s in first.json()] == ["svc-000", "svc-001", "svc-002"] and first["X-Total-Count"] == "7"
    middle = c.get("/mgmt/services?limit=3&offset=3")
    assert middle.json() == [expected(i) for i in (3, 4, 5)] and middle["X-Total-Count"] == "7"
    assert [s["name"] for s in c.get("/mgmt/services?limit=3&offset=6").json()] == ["svc-006"]
    past = c.get("/mgmt/services?offset=7")
    assert past.status_code == 200 and past.json() == [] and past["X-Total-Count"] == "7"


def test_the_default_limit_is_500_and_the_maximum_1000(clients) -> None:
    Service.objects.bulk_create(Service(name=f"bulk-{i:03d}", command="x") for i in range(501))
    c = clients["alice"]
    default = c.get("/mgmt/services")
    assert len(default.json()) == 500 and default["X-Total-Count"] == "501"
    assert default.json()[-1]["name"] == "bulk-499"
    assert len(c.get("/mgmt/services?limit=1000").json()) == 501
    assert [s["name"] for s in c.get("/mgmt/services?offset=500").json()] == ["bulk-500"]


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=-1", "limit"), ("limit=1001", "limit"), ("limit=abc", "limit"),
    ("limit=1.5", "limit"), ("limit=", "limit"), ("offset=-1", "offset"), ("offset=many", "offset"),
    ("limit=10&offset=-5", "offset"), ("limit=99999999999999999999999", "limit"),
    ("offset=99999999999999999999", "offset"), ("offset=9223372036854775807", "offset"), ("offset=1e3", "offset"),
])
def test_bad_paging_values_are_a_400_naming_the_parameter_and_change_nothing(clients, tokens, query, field) -> None:
    add_services(0, 2)
    audit_before = AuditEntry.objects.count()
    for resp in (clients["alice"].get(f"/mgmt/services?{query}"),
                 api(clients["anon"], "GET", f"/mgmt/services?{query}", token=tokens["bob"])):
        assert resp.status_code == 400, resp.content
        assert resp["Content-Type"].startswith("application/json")
        body = resp.json()
        assert body["error"] == "invalid_request" and body["detail"].startswith(f"{field}:"), body
        assert "X-Total-Count" not in resp
    assert AuditEntry.objects.count() == audit_before
    assert list(Service.objects.values_list("name", "desired_instances")) == [("svc-000", 0), ("svc-001", 1)]


def test_personas_list_only_what_they_may_see(clients, personas, tokens) -> None:
    add_services(0, 4)
    dave, carol = personas["dave"], personas["carol"]
    for svc in Service.objects.filter(name__in=["svc-001", "svc-003"]):
        assign_perm("fleet.view_service", dave, svc)
    assign_perm("fleet.view_service", Group.objects.get(name="analysts"), Service.objects.get(name="svc-002"))

    def names(who: str, query: str = "") -> tuple[list[str], str]:
        resp = api(clients["anon"], "GET", f"/mgmt/services{query}", token=tokens[who])
        assert resp.status_code == 200
        return [s["name"] for s in resp.json()], resp["X-Total-Count"]

    assert names("alice") == (["svc-000", "svc-001", "svc-002", "svc-003"], "4")
    assert names("bob") == (["svc-000", "svc-001", "svc-002", "svc-003"], "4")
    assert names("dave") == (["svc-001", "svc-003"], "2")
    assert names("dave", "?offset=1") == (["svc-003"], "2")  # offset counts what dave sees, not the fleet
    assert names("carol") == (["svc-002"], "1")  # through her group's per-object grant
    carol.groups.clear()
    assert names("carol") == ([], "0")
    assert api(clients["anon"], "GET", "/mgmt/services").status_code == 401


@pytest.mark.parametrize("who", ["alice", "bob", "dave"])
def test_the_list_costs_the_same_queries_with_3_and_30_services(clients, personas, who) -> None:
    grant = personas["dave"] if who == "dave" else None
    add_services(0, 3, grant_to=grant)
    c = clients[who]
    c.get("/mgmt/services")  # warm the per-process caches (content types) out of the count
    small, resp = queries(c, "/mgmt/services")
    assert len(resp.json()) == 3
    add_services(3, 30, grant_to=grant)
    large, resp = queries(c, "/mgmt/services")
    assert len(resp.json()) == 30 and resp["X-Total-Count"] == "30"
    assert resp.json()[29] == expected(29)
    assert large == small, f"{who}: {small} queries with 3 services, {large} with 30"


# --- one service ------------------------------------------------------------------------------------
def test_one_service_lists_its_live_and_stopping_instances_with_its_counts(clients) -> None:
    add_services(0, 3)
    body = clients["alice"].get("/mgmt/services/svc-002").json()
    assert {k: v for k, v in body.items() if k != "instances"} == {k: v for k, v in expected(2).items()
                                                                   if k != "instances"}
    # 3 running, 1 starting, the stopping one listed; the stopped one not.
    assert sorted(i["state"] for i in body["instances"]) == sorted([RUNNING] * 3 + [STARTING, STOPPING])
    assert clients["alice"].get("/mgmt/services/nope").status_code == 404


@pytest.mark.parametrize("who", ["alice", "bob", "dave"])
def test_one_service_costs_the_same_queries_whatever_the_fleet(clients, personas, who) -> None:
    grant = personas["dave"] if who == "dave" else None
    add_services(0, 3, grant_to=grant)
    c = clients[who]
    c.get("/mgmt/services/svc-000")
    small, _ = queries(c, "/mgmt/services/svc-000")
    add_services(3, 30, grant_to=grant)
    svc = Service.objects.get(name="svc-000")
    Instance.objects.bulk_create(Instance(service=svc, driver="process", ref=f"more-{n}", state=RUNNING)
                                 for n in range(10))
    large, resp = queries(c, "/mgmt/services/svc-000")
    assert resp.json()["running"] == 11 and len(resp.json()["instances"]) == 13
    assert large == small


# --- the OpenAPI document -----------------------------------------------------------------------------
def test_the_openapi_documents_limit_offset_and_the_total_header(clients) -> None:
    op = clients["alice"].get("/mgmt/openapi.json").json()["paths"]["/mgmt/services"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["limit"]["in"] == "query" and not params["limit"].get("required", False)
    assert params["limit"]["schema"]["default"] == 500 and params["limit"]["schema"]["maximum"] == 1000
    assert params["limit"]["schema"]["minimum"] == 1 and params["offset"]["schema"]["minimum"] == 0
    assert "X-Total-Count" in op["responses"]["200"]["headers"]
    assert "X-Total-Count" in op["description"] and "offset" in op["description"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"


# --- can_many: can() for a page at once ----------------------------------------------------------------
def test_can_many_agrees_with_can_for_every_persona_and_object(personas) -> None:
    services = add_services(0, 6, grant_to=personas["dave"])
    assign_perm("fleet.scale_service", Group.objects.get(name="analysts"), services[1])
    assign_perm("fleet.view_service", Group.objects.get(name="analysts"), services[1])
    inactive = User.objects.create_user("erin", is_active=False)
    assign_perm("fleet.scale_service", inactive, services[0])
    for user in [*personas.values(), inactive, None]:
        for action in ("view", "scale", "change"):
            # Each side on its own user object: can_many's prefetch must not be what can() reads.
            checker, batch = (User.objects.get(pk=user.pk), User.objects.get(pk=user.pk)) if user else (None, None)
            one_by_one = {s.pk for s in services if can(checker, action, s)}
            assert can_many(batch, action, services) == one_by_one, (user, action)
    dave = User.objects.get(pk=personas["dave"].pk)
    assert can_many(dave, "scale", services) == {services[i].pk for i in (0, 2, 4)}
    carol = User.objects.get(pk=personas["carol"].pk)
    assert can_many(carol, "scale", services) == {services[1].pk}
    assert can_many(dave, "scale", []) == set()


def test_can_many_is_two_queries_for_per_object_grants_whatever_the_number(personas) -> None:
    services = add_services(0, 30, grant_to=personas["dave"])
    for n in (3, 30):
        dave = User.objects.get(pk=personas["dave"].pk)
        dave.has_perm("fleet.scale_service")  # the global permissions, cached on the user
        with CaptureQueriesContext(connection) as ctx:
            allowed = can_many(dave, "scale", services[:n])
        assert len(allowed) == (n + 1) // 2
        assert len(ctx.captured_queries) == 2, [q["sql"] for q in ctx.captured_queries]
        with CaptureQueriesContext(connection) as ctx:  # and the request's can() reads its cache
            assert can(dave, "scale", services[0]) and not can(dave, "scale", services[1])
        assert len(ctx.captured_queries) == 0
