"""Every answer under /mgmt/ is JSON {"error", "detail"}, including a wrong method, an unknown path
and a malformed parameter."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"service": json_values, "instances": json_values}),
    st.fixed_dictionaries({"flowId": json_values, "data": json_values}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/mgmt/scale", "/mgmt/workflows", "/mgmt/scale?dry_run=1",
                             "/mgmt/workflows?dry_run=true"]), body=bodies)
def test_junk_bodies_get_a_4xx_json_answer_never_a_5xx(clients, tokens, demo, path, body) -> None:
    r = api(clients["anon"], "post", path, json.dumps(body), tokens["bob"])
    assert r.status_code < 500, r.content[:300]
    if r.status_code >= 400:
        assert r.json()["error"] and r.json()["detail"]
