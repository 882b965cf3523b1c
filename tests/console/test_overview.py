"""The overview at fleet scale: one page of services (?page=, ?q=), the 3 s poll keeping that page
and filter, the scale control only where the user may scale, and a constant number of queries for
the page and its poll whatever the number of services, runs and audit entries."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from audit.actions import record
from fleet.models import Instance, Service
from fleet.selectors import PAGE_SIZE
from workflows.models import WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def add_services(start: int, stop: int, *, grant_to: User | None = None, prefix: str = "svc") -> None:
    """<prefix>-<i> with i % 3 running and one starting on even i; grant_to: view on each, scale on
    even ones, per object."""
    for i in range(start, stop):
        svc = Service.objects.create(name=f"{prefix}-{i:03d}", command="x", desired_instances=2)
        states = [Instance.State.RUNNING] * (i % 3) + ([Instance.State.STARTING] if i % 2 == 0 else [])
        Instance.objects.bulk_create(Instance(service=svc, driver="process", ref=f"{svc.name}-{n}", state=s)
                                     for n, s in enumerate(states))
        if grant_to is not None:
            assign_perm("fleet.view_service", grant_to, svc)
            if i % 2 == 0:
                assign_perm("fleet.scale_service", grant_to, svc)


def rows(html: str) -> list[str]:
    return re.findall(r'<tr id="service-[^"]*" data-service="([^"]+)"', html)


def row(html: str, name: str) -> str:
    return re.search(rf'<tr id="service-[^"]*" data-service="{re.escape(name)}">.*?</tr>', html, re.S).group(0)


def poll_url(html: str) -> str:
    return re.search(r'<div id="services"[^>]* hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")


def get(client: Client, path: str, **extra: Any) -> str:
    resp = client.get(path, **extra)
    assert resp.status_code == 200, resp.content[:300]
    return resp.content.decode()


def names(first: int, last: int) -> list[str]:
    return [f"svc-{i:03d}" for i in range(first, last)]


# --- paging and filtering ------------------------------------------------------------------------
def test_the_first_page_holds_a_page_of_services_and_page_2_the_rest(clients) -> None:
    add_services(0, PAGE_SIZE + 7)
    first = get(clients["alice"], "/")
    assert rows(first) == names(0, PAGE_SIZE)
    assert f"1–{PAGE_SIZE} of {PAGE_SIZE + 7} services" in first
    assert 'href="?page=2"' in first and 'rel="next"' in first and 'rel="prev"' not in first
    second = get(clients["alice"], "/?page=2")
    assert rows(second) == names(PAGE_SIZE, PAGE_SIZE + 7)
    assert 'href="?page=1"' in second and 'rel="prev"' in second and 'rel="next"' not in second
    assert '<strong aria-current="page">2</strong>' in second


def test_a_small_fleet_has_no_pager(clients) -> None:
    add_services(0, 3)
    html = get(clients["alice"], "/")
    assert rows(html) == names(0, 3) and '<nav class="service-pager"' not in html and "1–3 of 3 services" in html


@pytest.mark.parametrize(("page", "shown"), [
    ("abc", 1), ("", 1), ("1.5", 1), ("0", 2), ("-1", 2), ("99", 2), ("2", 2), ("1", 1),
])
def test_a_bad_page_number_is_read_as_paginator_get_page_reads_it(clients, page, shown) -> None:
    add_services(0, PAGE_SIZE + 2)
    html = get(clients["alice"], f"/?page={page}")
    assert rows(html) == (names(0, PAGE_SIZE) if shown == 1 else names(PAGE_SIZE, PAGE_SIZE + 2))
    assert f"page={shown}" in poll_url(html)  # the poll asks for the page shown, not the one typed


def test_q_filters_by_name_case_insensitively_and_links_keep_it(clients) -> None:
    add_services(0, 3)
    add_services(0, PAGE_SIZE + 1, prefix="web")
    html = get(clients["alice"], "/?q=WEB")
    assert rows(html) == [f"web-{i:03d}" for i in range(PAGE_SIZE)]
    assert f"of {PAGE_SIZE + 1} services" in html
    assert 'href="?q=WEB&amp;page=2"' in html and 'name="q" value="WEB"' in html
    assert rows(get(clients["alice"], "/?q=WEB&page=2")) == [f"web-{PAGE_SIZE:03d}"]
    assert rows(get(clients["alice"], "/?q=svc-00")) == names(0, 3)
    none = get(clients["alice"], "/?q=nothing-like-it")
    assert rows(none) == [] and "No service you may see matches “nothing-like-it”." in none


def test_the_poll_asks_for_the_same_page_and_filter_and_answers_the_partial(clients) -> None:
    add_services(0, 3)
    add_services(0, PAGE_SIZE + 4, prefix="web")
    html = get(clients["alice"], "/?q=web&page=2")
    url = poll_url(html)
    assert url == "/?part=services&q=web&page=2"
    partial = get(clients["alice"], url, **HX)
    assert "<html" not in partial and partial.count('id="services"') == 1
    assert rows(partial) == [f"web-{i:03d}" for i in range(PAGE_SIZE, PAGE_SIZE + 4)]
    assert poll_url(partial) == url  # and the next poll asks for it again
    # Without the htmx header the same URL is the whole page (a bookmarked poll URL still works).
    assert "<html" in get(clients["alice"], url)


def test_counts_and_the_scale_control_follow_each_row(clients, personas) -> None:
    dave = personas["dave"]
    add_services(0, 4, grant_to=dave)
    html = get(clients["dave"], "/")
    assert rows(html) == names(0, 4)
    two = row(html, "svc-002")  # 2 running, 1 starting; dave may scale even rows
    assert '<td class="running">2 <span class="muted">(+1 starting)</span></td>' in two
    assert 'name="instances"' in two and "view only" not in two
    one = row(html, "svc-001")
    assert '<td class="running">1</td>' in one and "view only" in one and 'name="instances"' not in one


def test_personas_see_only_their_services(clients, personas) -> None:
    add_services(0, 3)
    assign_perm("fleet.view_service", personas["dave"], Service.objects.get(name="svc-001"))
    assert rows(get(clients["alice"], "/")) == names(0, 3)
    bob = get(clients["bob"], "/")
    assert rows(bob) == names(0, 3) and "view only" not in bob  # operators scale every service
    dave = get(clients["dave"], "/")
    assert rows(dave) == ["svc-001"] and "view only" in dave and "1–1 of 1 service<" in dave
    assert rows(get(clients["dave"], "/?q=svc-000")) == []  # a filter finds nothing dave may not see
    carol = get(clients["carol"], "/?part=services", **HX)
    assert rows(carol) == [] and "No services you may see." in carol
    assert clients["anon"].get("/?part=services", **HX).status_code in (302, 401)


# --- a constant number of queries --------------------------------------------------------------------
def add_runs_and_audit(user: User, n: int) -> None:
    flow, _ = WorkflowDefinition.objects.get_or_create(slug="scaleFlow", defaults={"name": "scale flow"})
    assign_perm("workflows.run_workflowdefinition", user, flow)
    for _ in range(n):
        WorkflowRun.objects.create(definition=flow, flow_slug=flow.slug, actor=user)
        record("test.event", actor=user, target_type="fleet.service", target_id="1", payload={})


@pytest.mark.parametrize("who", ["alice", "bob", "dave"])
@pytest.mark.parametrize("part", [False, True])
def test_the_overview_costs_the_same_queries_with_3_and_30_services(clients, personas, who, part) -> None:
    user = personas[who]
    grant = user if who == "dave" else None
    path, extra = ("/?part=services", HX) if part else ("/", {})
    add_services(0, 3, grant_to=grant)
    add_runs_and_audit(user, 2)
    clients[who].get(path, **extra)  # warm the per-process caches (content types) out of the count
    with CaptureQueriesContext(connection) as small:
        html = get(clients[who], path, **extra)
    assert len(rows(html)) == 3
    add_services(3, 30, grant_to=grant)
    add_runs_and_audit(user, 12)
    with CaptureQueriesContext(connection) as large:
        html = get(clients[who], path, **extra)
    assert len(rows(html)) == 30
    if not part:
        assert html.count('href="/runs/') >= 10  # the recent runs are listed
    assert len(large.captured_queries) == len(small.captured_queries), (
        f"{who}: {len(small.captured_queries)} queries with 3 services, {len(large.captured_queries)} with 30:\n"
        + "\n".join(q["sql"][:160] for q in large.captured_queries))


def test_a_page_past_the_first_costs_the_same_as_the_first(clients) -> None:
    add_services(0, 2 * PAGE_SIZE + 5)
    with CaptureQueriesContext(connection) as first:
        get(clients["alice"], "/?part=services", **HX)
    with CaptureQueriesContext(connection) as third:
        html = get(clients["alice"], "/?part=services&page=3", **HX)
    assert rows(html) == names(2 * PAGE_SIZE, 2 * PAGE_SIZE + 5)
    assert len(third.captured_queries) == len(first.captured_queries)
