"""HMS_LOG_FORMAT=json: every record is one JSON object on one line; a request's lines carry the
request id its audit entries store, the user and the route; one line per request says its status
and duration."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.test import Client

from audit.models import AuditEntry
from core.logging import JsonFormatter


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The settings' JSON formatter on a handler of the root logger, as HMS_LOG_FORMAT=json sets it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]  # each line parses on its own


@pytest.mark.django_db
def test_a_refused_request_logs_the_request_id_of_its_audit_entry(json_log) -> None:
    r = Client().get("/mgmt/services")  # no token: 401, audited as access_refused
    assert r.status_code == 401
    entry = AuditEntry.objects.latest("id")
    assert entry.request_id and entry.request_id == r["X-Request-ID"]
    (line,) = [rec for rec in records(json_log) if rec["logger"] == "hmsmgmt.request"]
    assert line["request_id"] == entry.request_id
    assert line["status"] == 401 and line["level"] == "INFO" and isinstance(line["duration_ms"], float)
    assert line["route"] == "mgmt/services" and line["method"] == "GET" and "user" not in line
    assert line["time"].endswith("+00:00") and line["message"].startswith("GET /mgmt/services 401 ")


@pytest.mark.django_db
def test_lines_inside_a_request_carry_user_route_and_the_callers_request_id(json_log, clients, demo) -> None:
    r = clients["alice"].get("/services/HMS-SVC/", HTTP_X_REQUEST_ID="trace-42")
    assert r.status_code == 200 and r["X-Request-ID"] == "trace-42"
    (line,) = [rec for rec in records(json_log) if rec["logger"] == "hmsmgmt.request"]
    assert (line["request_id"], line["user"], line["route"], line["status"]) == \
        ("trace-42", "alice", "services/<str:name>/", 200)


def test_outside_a_request_extra_fields_and_tracebacks() -> None:
    logger = logging.getLogger("tests.json")
    record = logger.makeRecord("tests.json", logging.WARNING, __file__, 1, "passes %d", (3,), None,
                               extra={"loop": "tick", "when": object()})
    line = json.loads(JsonFormatter().format(record))
    assert {k: line[k] for k in ("level", "logger", "message", "loop")} == \
        {"level": "WARNING", "logger": "tests.json", "message": "passes 3", "loop": "tick"}
    assert "request_id" not in line and line["when"].startswith("<object")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = logger.makeRecord("tests.json", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exc"]


def test_the_setting_chooses_the_formatter(monkeypatch) -> None:
    import importlib

    from hmsmgmt import settings

    monkeypatch.setenv("HMS_LOG_FORMAT", "json")
    try:
        assert importlib.reload(settings).LOGGING["handlers"]["console"]["formatter"] == "json"
        monkeypatch.setenv("HMS_LOG_FORMAT", "xml")
        with pytest.raises(Exception, match="HMS_LOG_FORMAT must be text or json"):
            importlib.reload(settings)
    finally:
        monkeypatch.delenv("HMS_LOG_FORMAT")
        assert importlib.reload(settings).LOGGING["handlers"]["console"]["formatter"] == "plain"
