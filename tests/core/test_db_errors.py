"""Database outages in one process: a request that meets OperationalError/InterfaceError anywhere
(view, ninja view or auth, a middleware, DEBUG's technical page) answers 503 database_unavailable —
JSON under /mgmt/, the plain 503 page elsewhere — never a 500; other errors keep their 500. A loop
survives errors in close_old_connections, in building a job and in its jobs, and logs an outage
once. On the embedded SQLite, a writer locked out past the busy timeout gets the same 503."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import InterfaceError, OperationalError, connection, connections
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import include, path

from audit.models import AuditEntry
from core import loops
from core.dberrors import Outage, unavailable
from fleet.models import Service
from tests.conftest import api


def _raising(exc: BaseException) -> Callable[[HttpRequest], HttpResponse]:
    def view(request: HttpRequest) -> HttpResponse:
        raise exc

    return view


urlpatterns = [
    path("boom/", _raising(OperationalError("connection refused"))),
    path("boom-interface/", _raising(InterfaceError("connection already closed"))),
    path("bug/", _raising(ValueError("a bug"))),
    path("mgmt/boom/", _raising(OperationalError("server closed the connection unexpectedly"))),
    path("", include("hmsmgmt.urls")),
]
URLS = "tests.core.test_db_errors"


class FailingMiddleware:
    """Raises a database error on the way out, as SessionMiddleware does when it cannot save."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.get_response(request)
        raise OperationalError("terminating connection due to administrator command")


@pytest.fixture(autouse=True)
def _fresh_outage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    """Each test starts with the database up, as far as the process knows."""
    fresh = Outage()
    for module in ("core.dberrors", "core.middleware", "core.loops", "controller.leader", "controller.loop"):
        monkeypatch.setattr(f"{module}.outage", fresh)
    yield fresh


def assert_json_503(r: HttpResponse) -> None:
    assert r.status_code == 503, r.content[:300]
    assert r["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["error"] == "database_unavailable" and body["detail"]
    assert r["Retry-After"].isdigit()


def assert_page_503(r: HttpResponse) -> None:
    assert r.status_code == 503, r.content[:300]
    assert r["Content-Type"].startswith("text/html")
    assert b"Database unavailable" in r.content
    assert b"Traceback" not in r.content


# --- the classification ------------------------------------------------------------------------
def test_unavailable_finds_the_database_error_behind_a_wrapper() -> None:
    db = OperationalError("refused")
    try:
        try:
            raise db
        except OperationalError as exc:
            raise RuntimeError("a library's own error") from exc
    except RuntimeError as wrapped:
        assert unavailable(wrapped) is db
    assert unavailable(ValueError("no")) is None
    assert isinstance(unavailable(InterfaceError("closed")), InterfaceError)


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    tracker = Outage()
    with caplog.at_level(logging.WARNING, logger="hmsmgmt.database"):
        for _ in range(50):
            tracker.failed("a test", OperationalError("connection refused\nIs the server running?"))
        assert tracker.active
        tracker.recovered("a test")
        tracker.recovered("a test")
    lines = [r.getMessage() for r in caplog.records if r.name == "hmsmgmt.database"]
    assert len(lines) == 2, lines
    assert "database unavailable (OperationalError: connection refused" in lines[0]
    assert "Is the server running" not in lines[0]  # the first line only, no traceback
    assert "available again" in lines[1] and "50 failed attempts" in lines[1]
    assert not tracker.active


# --- requests ----------------------------------------------------------------------------------
@pytest.mark.urls(URLS)
@pytest.mark.parametrize("debug", [False, True])
def test_a_view_raising_a_database_error_answers_503(debug: bool, _fresh_outage: Outage) -> None:
    with override_settings(DEBUG=debug):
        client = Client()
        assert_page_503(client.get("/boom/"))
        assert_page_503(client.get("/boom-interface/"))
        assert_json_503(client.get("/mgmt/boom/"))
    assert _fresh_outage.active and _fresh_outage.outages == 1


@pytest.mark.urls(URLS)
def test_other_errors_stay_500() -> None:
    r = Client(raise_request_exception=False).get("/bug/")
    assert r.status_code == 500


@pytest.mark.urls(URLS)
@pytest.mark.parametrize("debug", [False, True])
def test_a_middleware_raising_a_database_error_answers_503(debug: bool, settings) -> None:  # type: ignore[no-untyped-def]
    settings.DEBUG = debug
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.core.test_db_errors.FailingMiddleware"]
    # The test client re-raises what Django reported through got_request_exception; a server does not.
    client = Client(raise_request_exception=False)
    assert_page_503(client.get("/bug/"))  # even a view's bug: the database error came after it
    assert_json_503(client.get("/mgmt/boom/"))


@pytest.mark.django_db
def test_the_api_answers_503_when_its_view_meets_an_outage(tokens, demo, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr("fleet.api.visible_services", down)
    assert_json_503(api(Client(), "get", "/mgmt/services", token=tokens["bob"]))


@pytest.mark.django_db
def test_the_api_answers_503_when_authentication_meets_an_outage(tokens, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def down(token: str) -> None:
        raise InterfaceError("connection already closed")

    monkeypatch.setattr("hmsmgmt.api.resolve_token", down)
    assert_json_503(api(Client(), "post", "/mgmt/scale", {"service": "HMS-SVC", "instances": 2}, token=tokens["bob"]))


@pytest.mark.django_db
def test_a_page_answers_503_when_the_session_cannot_be_read(clients, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.sessions.backends.db import SessionStore

    def down(self: SessionStore) -> dict:
        raise OperationalError("the connection is lost")

    client = clients["bob"]  # signed in: the session is read to find the user
    monkeypatch.setattr(SessionStore, "load", down)
    assert_page_503(client.get("/"))


# --- loops ---------------------------------------------------------------------------------------
def test_a_loop_survives_close_old_connections_and_a_failing_build(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    ran: list[str] = []
    builds = iter([ValueError("not yet"), None, None])

    def make() -> Callable[[], None]:
        exc = next(builds)
        if exc is not None:
            raise exc
        return lambda: ran.append("built")

    def broken_close(self: object) -> None:
        raise InterfaceError("connection already closed")

    monkeypatch.setattr(loops, "_jobs", [])
    monkeypatch.setattr(type(connections["default"]), "close_if_unusable_or_obsolete", broken_close)
    monkeypatch.setattr(loops, "drop", lambda alias="default": None)
    monkeypatch.setattr(loops, "probe", lambda: None)  # the database answers: each pass runs the jobs
    loops.register("test", "late", 0, make=make)
    loops.register("test", "plain", 0, lambda: ran.append("plain"))
    connections["default"].connection = object()  # initialized, so close_old_connections visits it
    try:
        loops.Loop("test", 0.0).run(max_passes=3)
    finally:
        connections["default"].connection = None
    assert ran == ["plain", "built", "plain", "built", "plain"]  # built on the second pass
    assert caplog.text.count("building job late failed") == 1


def test_a_loop_logs_an_outage_once_and_resumes_on_the_first_pass_that_reaches_the_database(
        monkeypatch, caplog, _fresh_outage: Outage) -> None:  # type: ignore[no-untyped-def]
    down = {"db": True}
    ran: list[int] = []
    probes: list[bool] = []

    def job() -> None:
        if down["db"]:
            raise OperationalError("connection refused")
        ran.append(1)

    def probe() -> BaseException | None:
        probes.append(down["db"])
        return OperationalError("connection refused") if down["db"] else None

    monkeypatch.setattr(loops, "_jobs", [])
    monkeypatch.setattr(loops, "probe", probe)
    monkeypatch.setattr(loops, "drop", lambda alias="default": None)
    monkeypatch.setattr(loops, "OUTAGE_RETRY", 0.0)
    loops.register("test", "work", 0, job)
    loops.register("test", "after", 0, lambda: ran.append(2))  # not run while the database is down
    loop = loops.Loop("test", 0.0)
    with caplog.at_level(logging.INFO):
        loop.run(max_passes=20)
        assert ran == [] and len(probes) == 19  # one failed pass, then probes only
        down["db"] = False
        loop.run(max_passes=22)
    assert probes[-1] is False and ran == [1, 2, 1, 2]  # the pass that reached it ran the jobs
    assert caplog.text.count("database unavailable") == 1
    assert caplog.text.count("available again") == 1
    assert "Traceback" not in caplog.text and "job work failed" not in caplog.text


def test_a_loop_survives_a_failing_leadership_check(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(loops, "_jobs", [])
    monkeypatch.setattr(loops, "OUTAGE_RETRY", 0.0)
    monkeypatch.setattr(loops, "probe", lambda: None)  # back by the next pass
    monkeypatch.setattr(loops, "drop", lambda alias="default": None)
    ran: list[int] = []
    loops.register("test", "work", 0, lambda: ran.append(1))
    answers = iter([OperationalError("refused"), True, True])

    def leads() -> bool:
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    loops.Loop("test", 0.0, leads=leads).run(max_passes=2)
    assert ran == [1, 1]


# --- the embedded SQLite default: a lock past the busy timeout -------------------------------------
@pytest.fixture
def short_busy_timeout() -> Iterator[float]:
    """The busy timeout of settings.DATABASES (HMS_SQLITE_BUSY_TIMEOUT_MS) cut to 0.3 s for this
    test's connection: the same two knobs, sqlite3's timeout and PRAGMA busy_timeout."""
    options = connection.settings_dict["OPTIONS"]
    saved = dict(options)
    assert options["timeout"] * 1000 == int(options["init_command"].split("busy_timeout=")[1].split(";")[0])
    connection.close()
    options.update(timeout=0.3, init_command=options["init_command"].replace(
        f"busy_timeout={int(saved['timeout'] * 1000)}", "busy_timeout=300"))
    yield 0.3
    connection.close()
    options.clear()
    options.update(saved)


@pytest.mark.skipif("connection.vendor != 'sqlite'", reason="the embedded SQLite default's write lock")
@pytest.mark.django_db(transaction=True)
def test_a_writer_locked_out_past_the_busy_timeout_gets_503_and_nothing_changes(
        tokens, demo, short_busy_timeout: float) -> None:  # type: ignore[no-untyped-def]
    before = (Service.objects.get(name="HMS-SVC").desired_instances, AuditEntry.objects.count())
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held longer than the busy timeout
        started = time.monotonic()
        r = api(Client(), "post", "/mgmt/scale", {"service": "HMS-SVC", "instances": 3}, token=tokens["bob"])
        waited = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert_json_503(r)
    assert "busy" in r.json()["detail"]
    assert waited >= short_busy_timeout  # it waited for the lock before giving up
    connection.close()
    assert (Service.objects.get(name="HMS-SVC").desired_instances, AuditEntry.objects.count()) == before
    # The lock gone, the same call succeeds.
    r = api(Client(), "post", "/mgmt/scale", {"service": "HMS-SVC", "instances": 3}, token=tokens["bob"])
    assert r.status_code == 200, r.content[:300]
