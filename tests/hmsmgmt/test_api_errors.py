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


# Text PostgreSQL cannot store (NUL, in text and in jsonb), text no encoder can write (a lone
# surrogate), numbers that overflow: a 400 naming the field, never a 500 from the INSERT.
@pytest.mark.parametrize(("path", "raw", "named"), [
    ("/mgmt/workflows", '{"flowId": "exportPatientData", "data": {"note": "a\\u0000b"}}', "data.note"),
    ("/mgmt/workflows", '{"flowId": "exportPatientData", "data": {"k\\u0000": 1}}', "data"),
    ("/mgmt/workflows", '{"flowId": "exportPatientData", "data": {"x": ["ok", "\\ud800"]}}', "data.x[1]"),
    ("/mgmt/workflows", '{"flowId": "exportPatientData", "data": {"x": 1e400}}', "1e400"),
    ("/mgmt/workflows", '{"flowId": "exportPatientData", "data": {"x": NaN}}', "NaN"),
    ("/mgmt/workflows", '{"flowId": "export\\u0000", "data": {}}', "flowId"),
    ("/mgmt/scale", '{"service": "HMS\\u0000SVC", "instances": 1}', "service"),
    ("/mgmt/workflows", '{"flowId": "exportPatientData", "data": ' + "[" * 5000 + "]" * 5000 + "}", "nested"),
])
def test_unstorable_json_is_a_400_naming_it(clients, tokens, demo, path, raw, named) -> None:
    from workflows.models import WorkflowRun

    runs = WorkflowRun.objects.count()
    r = api(clients["anon"], "post", path, raw, tokens["alice"])
    assert r.status_code == 400, r.content[:300]
    assert r.json()["error"] in ("invalid_request", "malformed_json") and named in r.json()["detail"]
    assert WorkflowRun.objects.count() == runs


@pytest.mark.parametrize("path", ["/mgmt/services/HMS%00SVC", "/mgmt/workflows/1%00", "/mgmt/audit?actor=a%00b",
                                  "/mgmt/workflows?flow=%00"])
def test_nul_in_a_path_or_query_is_a_400(clients, tokens, demo, path) -> None:
    r = api(clients["anon"], "get", path, None, tokens["alice"])
    assert r.status_code == 400, r.content[:300]
    assert r.json()["error"] == "invalid_request" and "NUL" in r.json()["detail"]


def test_nul_in_pages_and_forms_is_a_400(clients, demo) -> None:
    alice = clients["alice"]
    assert alice.get("/services/HMS%00SVC/").status_code == 400
    assert alice.get("/audit/?actor=a%00b").status_code == 400
    r = alice.post("/services/HMS-SVC/scale/", {"instances": "1\x00"})
    assert r.status_code == 400 and b"instances" in r.content


def test_launch_form_refuses_unstorable_run_data(clients, demo) -> None:
    from workflows.models import WorkflowRun

    r = clients["alice"].post("/runs/launch/", {"flowId": "exportPatientData", "data": '{"x": "\\u0000"}'},
                              follow=True)
    assert r.status_code == 200 and b"NUL" in r.content
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(("raw", "says"), [("[1, 2]", "not an array"), ("null", "not null"), ('"x"', "not a string"),
                                           ("", "empty")])
def test_a_body_that_is_not_an_object_is_named_so(clients, tokens, demo, raw, says) -> None:
    r = api(clients["anon"], "post", "/mgmt/scale", raw, tokens["alice"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert says in r.json()["detail"]
