"""Every answer under /mgmt/ is JSON {"error", "detail"}, including a wrong method, an unknown path
and a malformed parameter."""

from __future__ import annotations

import pytest

from tests.conftest import api

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), [
    ("get", "/mgmt/scale", None, 405, "method_not_allowed"),
    ("put", "/mgmt/workflows", {}, 405, "method_not_allowed"),
    ("delete", "/mgmt/services/HMS-SVC", None, 405, "method_not_allowed"),
    ("get", "/mgmt/no/such/thing", None, 404, "not_found"),
    ("post", "/mgmt/workflows", "{not json", 400, "malformed_json"),
    ("post", "/mgmt/workflows", [], 400, "invalid_request"),
    ("get", "/mgmt/workflows/abc", None, 400, "invalid_request"),
    ("post", "/mgmt/scale", {"service": "HMS-SVC", "instances": "x"}, 400, "invalid_request"),
    ("post", "/mgmt/workflows?dry_run=maybe", {"flowId": "analyticsReport"}, 400, "invalid_request"),
])
def test_errors_are_json(clients, tokens, demo, method, path, body, status, error) -> None:
    r = api(clients["anon"], method, path, body, tokens["bob"])
    assert r.status_code == status, r.content[:300]
    assert r["Content-Type"].startswith("application/json")
    assert r.json()["error"] == error and r.json()["detail"]


def test_405_keeps_the_allow_header(clients, tokens) -> None:
    r = api(clients["anon"], "get", "/mgmt/scale", token=tokens["bob"])
    assert r["Allow"] == "POST"
