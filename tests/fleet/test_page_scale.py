"""The scale control on the pages shares the API's ceiling (HMS_MAX_INSTANCES)."""

from __future__ import annotations

import pytest
from django.conf import settings

from audit.models import AuditEntry
from fleet.models import Service

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["-1", "abc", "", str(settings.HMS_MAX_INSTANCES + 1), "1000000000"])
def test_page_refuses_counts_outside_the_ceiling_and_changes_nothing(clients, demo, value):
    before = AuditEntry.objects.count()
    resp = clients["alice"].post("/services/HMS-SVC/scale/", {"instances": value}, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200  # the refusal is shown in the swapped row
    assert b"scale-result" in resp.content and b"error" in resp.content
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0
    assert AuditEntry.objects.count() == before


def test_override_refuses_counts_above_the_ceiling(clients, demo):
    resp = clients["alice"].post("/services/HMS-SVC/override/",
                                 {"instances": settings.HMS_MAX_INSTANCES + 1, "ttl_minutes": 5})
    assert resp.status_code in (302, 400)
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0


@pytest.mark.parametrize(("nxt", "lands"), [("/services/HMS-SVC/", "/services/HMS-SVC/"), ("//evil.example/", "/"),
                                            ("/\\evil.example/", "/"), ("https://evil.example/", "/"), ("", "/")])
def test_the_form_returns_only_to_a_page_of_this_console(clients, demo, nxt, lands):
    resp = clients["alice"].post("/services/HMS-SVC/scale/", {"instances": "0", "next": nxt})
    assert resp.status_code == 302 and resp["Location"] == lands
