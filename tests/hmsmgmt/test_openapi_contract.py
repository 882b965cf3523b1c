"""The REST contract: /mgmt/openapi.json is a valid OpenAPI 3.1 document that documents, for every
operation, every status it can answer (each error with its schema and an example), the bearer
scheme and an example request and response; and schemathesis, with its default checks, finds
nothing when it calls every operation with a superuser's API token.

The engine is replaced for the schemathesis run (`instant_engine`): a scale converges at once
without starting a process, so schemathesis's instance counts (up to HMS_MAX_INSTANCES) start
nothing; `stop_local_instances` stops anything that would have started anyway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from fleet import reconcile
from fleet.drivers.base import EngineUnavailable
from tests.conftest import api

pytestmark = pytest.mark.django_db

ERROR_REFS = {"#/components/schemas/ErrorOut", "#/components/schemas/PolicyViolationOut"}


@pytest.fixture
def spec(client) -> dict[str, Any]:
    r = client.get("/mgmt/openapi.json")
    assert r.status_code == 200
    return r.json()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def _refs(schema: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return {schema["$ref"]}
    return {r for alt in schema.get("anyOf", []) for r in _refs(alt)}


# --- the document ---------------------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_1(spec) -> None:
    assert spec["openapi"].startswith("3.1")
    # Loading validates the document against the OpenAPI 3.1 meta-schema.
    schema = schemathesis.openapi.from_dict(spec)
    schema.validate()
    assert {op.ok().label for op in schema.get_all_operations()} == {f"{m} {p}" for m, p, _ in _operations(spec)}


def test_the_security_schemes_are_bearer_and_the_session_cookie(spec) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["TokenAuth"] | {"description": ""} == {"type": "http", "scheme": "bearer",
                                                         "bearerFormat": "hms_<id>_<secret>", "description": ""}
    assert schemes["ActiveSessionAuth"]["type"] == "apiKey" and schemes["ActiveSessionAuth"]["in"] == "cookie"
    for method, path, op in _operations(spec):
        assert op["security"] == [{"TokenAuth": []}, {"ActiveSessionAuth": []}], (method, path)


def test_every_operation_documents_its_errors_with_schemas_and_examples(spec) -> None:
    components = spec["components"]["schemas"]
    assert set(components["ErrorOut"]["required"]) == {"error", "detail"}
    assert set(components["PolicyViolationOut"]["required"]) == {
        "error", "detail", "policy", "kind", "limit", "current", "reasons", "policies"}
    for method, path, op in _operations(spec):
        statuses = set(op["responses"])
        assert {"200", "400", "401"} <= statuses, (method, path)
        if method == "POST":
            assert "413" in statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        for status, response in op["responses"].items():
            assert response.get("description"), (method, path, status)
            content = response["content"]
            assert all("example" in media for media in content.values()), (method, path, status)
            if not status.startswith("2"):  # 202 queued is a success with its own schema
                assert _refs(content["application/json"]["schema"]) <= ERROR_REFS, (method, path, status)
                assert _refs(content["application/json"]["schema"]), (method, path, status)
        if "requestBody" in op:
            assert "example" in op["requestBody"]["content"]["application/json"], (method, path)
        for param in op["parameters"]:
            if param["in"] == "path":
                assert "example" in param, (method, path, param["name"])


@pytest.mark.parametrize(("method", "path", "statuses"), [
    ("POST", "/mgmt/scale", {"403", "404", "409", "413", "422", "503"}),
    ("POST", "/mgmt/workflows", {"403", "404", "409", "413", "429"}),
    ("POST", "/mgmt/workflows/{run_id}/retry", {"403", "404", "409", "429"}),
    ("GET", "/mgmt/audit", {"403"}),
])
def test_refusals_are_documented_where_they_happen(spec, method, path, statuses) -> None:
    responses = spec["paths"][path][method.lower()]["responses"]
    assert statuses <= set(responses)
    if "429" in statuses:
        assert _refs(responses["429"]["content"]["application/json"]["schema"]) == {
            "#/components/schemas/PolicyViolationOut"}


def test_the_examples_are_the_chapter_calls(spec) -> None:
    scale = spec["paths"]["/mgmt/scale"]["post"]
    assert scale["requestBody"]["content"]["application/json"]["example"] == {
        "service": "HMS-SVC", "instances": 3, "wait": True}
    assert set(scale["responses"]["200"]["content"]["application/json"]["example"]) == {
        "service", "previous", "desired", "running", "starting", "converged"}
    start = spec["paths"]["/mgmt/workflows"]["post"]
    assert start["responses"]["200"]["content"]["application/json"]["example"] == {"runId": 42, "status": "started"}


# --- the chapter's two calls are unchanged ----------------------------------------------------------
def test_the_chapter_calls_answer_exactly_their_keys(client, personas, tokens, demo, instant_engine) -> None:
    r = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 2}, token=tokens["alice"])
    assert r.status_code == 200
    assert json.loads(r.content) == {"service": "HMS-SVC", "previous": 0, "desired": 2, "running": 2,
                                     "starting": 0, "converged": True}
    assert list(json.loads(r.content)) == ["service", "previous", "desired", "running", "starting", "converged"]
    r = api(client, "POST", "/mgmt/workflows", {"flowId": "reportingFlow", "data": {"user": 123}},
            token=tokens["alice"])
    assert r.status_code == 200 and list(r.json()) == ["runId", "status"] and r.json()["status"] == "started"


def test_an_unreachable_engine_is_the_documented_503(demo, monkeypatch, root_token, in_test_transaction) -> None:
    def down(*_: Any, **__: Any) -> reconcile.Status:
        raise EngineUnavailable("connection refused")

    monkeypatch.setattr(reconcile, "converge", down)
    case = console_schema()["/mgmt/scale"]["POST"].Case(body={"service": "HMS-SVC", "instances": 1},
                                                         media_type="application/json")
    response = case.call(headers={"Authorization": f"Bearer {root_token}"})
    assert response.status_code == 503 and response.json()["error"] == "engine_unavailable"
    case.operation.validate_response(response)


# --- schemathesis over every operation ---------------------------------------------------------------
@pytest.fixture
def instant_engine(monkeypatch) -> None:
    """An engine that converges at once and starts nothing: running == desired after a pass."""
    from fleet.models import Service

    def converge(service_id: int, **_: Any) -> reconcile.Status:
        svc = Service.objects.get(pk=service_id)
        return reconcile.Status(svc.desired_instances, svc.desired_instances, 0)

    monkeypatch.setattr(reconcile, "converge", converge)


@pytest.fixture
def root_token(db) -> str:
    from django.contrib.auth.models import User

    from accounts.actions import create_api_token

    root = User.objects.create_superuser("root", "root@example.org", "pw-root-123")
    return create_api_token(root, actor="system:test")[1]


def served_document() -> dict[str, Any]:
    """What GET /mgmt/openapi.json serves (test_the_served_document_is_the_one_tested checks it)."""
    from hmsmgmt.api import api as mgmt_api

    return json.loads(json.dumps(mgmt_api.get_openapi_schema(), cls=DjangoJSONEncoder))


def console_schema() -> Any:
    """The document bound to the console's WSGI app: schemathesis calls it in-process."""
    from django.core.wsgi import get_wsgi_application

    loaded = schemathesis.openapi.from_dict(served_document())
    loaded.app = get_wsgi_application()
    return loaded


@pytest.fixture
def in_test_transaction() -> Iterator[None]:
    """Requests through the WSGI app run in the test's transaction: Django's request signals must
    not close the connection (as its test client arranges)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_the_served_document_is_the_one_tested(spec) -> None:
    assert spec == served_document()


schema = console_schema()


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_nothing(case, demo, instant_engine, stop_local_instances, root_token,
                                    in_test_transaction) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {root_token}"})


# --- what schemathesis found, kept fixed ------------------------------------------------------------
def test_a_multipart_post_without_a_boundary_is_a_400_not_a_500(client, tokens, demo) -> None:
    r = client.post("/mgmt/scale", data=b"--x--", content_type="multipart/form-data",
                    HTTP_AUTHORIZATION=f"Bearer {tokens['alice']}")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request" and "multipart" in r.json()["detail"]


def test_a_whole_number_written_as_a_float_is_a_count(client, tokens, demo, instant_engine) -> None:
    r = api(client, "POST", "/mgmt/scale", '{"service": "HMS-SVC", "instances": 2.0}', token=tokens["alice"])
    assert r.status_code == 200 and r.json()["desired"] == 2
    for bad in ("2.5", "true", '"2"', "1e300"):
        body = '{"service": "HMS-SVC", "instances": ' + bad + "}"
        r = api(client, "POST", "/mgmt/scale", body, token=tokens["alice"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", bad


@pytest.mark.parametrize(("query", "status"), [("seq=6.0", 200), ("limit=10.0", 200), ("seq=6.5", 400),
                                               ("seq=NaN", 400), ("seq=1e400", 400), ("before=x", 400)])
def test_audit_numbers_read_as_the_other_parameters(client, tokens, demo, query, status) -> None:
    r = api(client, "GET", f"/mgmt/audit?{query}", token=tokens["alice"])
    assert r.status_code == status, r.content[:200]


def test_no_two_response_schemas_share_a_name(spec) -> None:
    """django-ninja names a component after its class: two Schema classes of one name overwrite
    each other in the document, and one endpoint is then documented with the other's shape."""
    from ninja import Schema

    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    ours = [c for c in subclasses(Schema) if not c.__module__.startswith(("ninja", "pydantic"))]
    names = [c.__name__ for c in ours if c.__name__ in spec["components"]["schemas"]]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
