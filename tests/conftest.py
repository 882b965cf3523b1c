"""Shared fixtures: personas (alice admin, bob operator, carol analyst, dave no access), clients
per persona, the demo fleet, and helpers to run real subprocesses (qcluster, controller,
gunicorn) against the test database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import DatabaseError, connection
from django.db.backends.signals import connection_created
from django.test import Client

from audit import triggers

ROOT = Path(__file__).resolve().parent.parent

# Process-driver instances run as `nobody` when the console runs as root (HMS_PROCESS_USER), and
# the tests' interpreter ({python}: the venv's, under a home only root may enter) is no program
# `nobody` may run. The suite keeps its instances as the running user, here and in the
# controllers and workers it spawns (they inherit os.environ); tests/fleet/test_service_privileges.py
# shows the switch to `nobody` with programs that account may run.
os.environ.setdefault("HMS_PROCESS_USER", "root" if os.geteuid() == 0 else "")
from django.conf import settings as _settings  # noqa: E402  (after the environment above)

_settings.HMS_PROCESS_USER = os.environ["HMS_PROCESS_USER"]


# --- two database roles (PostgreSQL): HMS_TEST_RUNTIME_ROLE -------------------------------------
# With HMS_TEST_RUNTIME_ROLE set (.ci/run sets it for the PostgreSQL run), the suite runs as
# production does (docs/production.md): the test database is created and migrated as the owner
# (DATABASE_URL's user), the named role gets `manage.py grant_runtime_role`, and then every test
# runs as that role: the test's own connection and any thread's switch to it (SET ROLE) as they
# connect, and the web, worker and controller processes tests start log in as it
# (database_url()). Only the suite's own housekeeping acts as the owner: installing the audit
# triggers around flushes, and the few tests that play the tables' owner (tamper tests, the
# migration test) through the `db_owner` fixture or `as_owner()`.
RUNTIME_ROLE = "".join(c for c in os.environ.get("HMS_TEST_RUNTIME_ROLE", "") if c.isalnum() or c == "_")
_split = {"on": False}


def runtime_split() -> bool:
    """True when tests run as the runtime role (PostgreSQL with HMS_TEST_RUNTIME_ROLE)."""
    return _split["on"] and connection.vendor == "postgresql"


def _set_role(conn: Any, role: str | None) -> None:
    with conn.cursor() as cursor:
        cursor.execute(f'SET ROLE "{role}"' if role else "RESET ROLE")


def _same_server(conn: Any) -> bool:
    """A connection to the test database's server (not a private PostgreSQL a test started, where
    the runtime role does not exist)."""
    from django.db import connections

    ours, main = conn.settings_dict, connections["default"].settings_dict
    return (ours.get("HOST"), str(ours.get("PORT"))) == (main.get("HOST"), str(main.get("PORT")))


def _runtime_on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _split["on"] and connection.vendor == "postgresql" and _same_server(connection):
        _set_role(connection, RUNTIME_ROLE)


connection_created.connect(_runtime_on_connect, dispatch_uid="tests.runtime_role")


def grant_runtime_role() -> None:
    """As the owner: (re)grant the runtime role; tables a test re-created need their grants again."""
    from django.core.management import call_command

    call_command("grant_runtime_role", RUNTIME_ROLE, stdout=open(os.devnull, "w"))  # noqa: SIM115


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's set-up (create and migrate the test database, as the owner), then the
    runtime role's grants when the two-role run is asked for."""
    if RUNTIME_ROLE:
        with django_db_blocker.unblock():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [RUNTIME_ROLE])
                    if cursor.fetchone() is None:
                        try:
                            cursor.execute(f'CREATE ROLE "{RUNTIME_ROLE}" LOGIN')
                        except DatabaseError:
                            pass  # another test run on this server created it just now
                grant_runtime_role()
                _split["on"] = True
    yield
    _split["on"] = False


@contextmanager
def as_owner() -> Iterator[None]:
    """Act as the tables' owner on the test's connection for a moment (no-op on one role)."""
    if not runtime_split():
        yield
        return
    _set_role(connection, None)
    try:
        yield
    finally:
        try:
            _set_role(connection, RUNTIME_ROLE)
        except DatabaseError:
            pass  # the body's error aborted the transaction; its rollback restores the role


@pytest.fixture
def db_owner() -> Iterator[None]:
    """For a test that plays the tables' owner (drops triggers, migrates). Grants again after."""
    with as_owner():
        yield
        if runtime_split() and not connection.in_atomic_block:
            grant_runtime_role()


# --- audit triggers vs. test teardown ---------------------------------------------------------
@pytest.fixture(autouse=True)
def _audit_triggers(request: pytest.FixtureRequest) -> Iterator[None]:
    """The audit tables refuse DELETE/TRUNCATE, but a transactional test's teardown flushes every
    table. Install the triggers for each DB test; drop them just before a flush. Both are the
    owner's doing; the test itself runs as the runtime role when there is one."""
    marker = request.node.get_closest_marker("django_db")
    names = request.fixturenames
    transactional = (
        "transactional_db" in names
        or "live_server" in names
        or bool(marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0])))
    )
    if not (transactional or marker or "db" in names):
        yield
        return
    request.getfixturevalue("transactional_db" if transactional else "db")
    with as_owner():
        triggers.install(connection)
    yield
    if transactional:
        if runtime_split():
            _set_role(connection, None)  # the flush after this fixture truncates: the owner's job
        triggers.uninstall(connection)


# --- personas ---------------------------------------------------------------------------------
@pytest.fixture
def personas(db: None) -> dict[str, User]:
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    bob = User.objects.create_user("bob", "bob@example.org", "pw-bob-123")
    bob.groups.add(Group.objects.get(name="operators"))
    carol = User.objects.create_user("carol", "carol@example.org", "pw-carol-123")
    carol.groups.add(Group.objects.get(name="analysts"))
    dave = User.objects.create_user("dave", "dave@example.org", "pw-dave-123")
    return {"alice": alice, "bob": bob, "carol": carol, "dave": dave}


@pytest.fixture
def clients(personas: dict[str, User]) -> dict[str, Client]:
    out: dict[str, Client] = {"anon": Client()}
    for name, user in personas.items():
        c = Client()
        c.force_login(user)
        out[name] = c
    return out


@pytest.fixture
def tokens(personas: dict[str, User]) -> dict[str, str]:
    from accounts.actions import create_api_token

    return {name: create_api_token(user, actor="system:test")[1] for name, user in personas.items()}


@pytest.fixture
def demo(db: None) -> None:
    """Demo services/flows/policy with desired counts set to 0 so nothing starts unless a test asks."""
    from console.demo import load_demo
    from fleet.models import Service

    load_demo("process")
    Service.objects.update(desired_instances=0)


def api(client: Client, method: str, path: str, body: object = None, token: str | None = None, **extra):
    """Call the REST API as a script would (JSON body, optional bearer token)."""
    import json

    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body) if body is not None else None
    fn = getattr(client, method.lower())
    if data is None:
        return fn(path, **headers, **extra)
    return fn(path, data=data, content_type="application/json", **headers, **extra)


# --- real subprocesses against the test database ----------------------------------------------
def database_url(*, owner: bool = False) -> str:
    """The test database for a process a test starts: as the runtime role in the two-role run
    (web, worker and controller never hold the owner's rights), unless `owner` is asked for."""
    s = connection.settings_dict
    if connection.vendor == "postgresql":
        host = s.get("HOST") or "127.0.0.1"
        port = s.get("PORT") or 5432
        if runtime_split() and not owner:
            return f"postgres://{RUNTIME_ROLE}@{host}:{port}/{s['NAME']}"
        auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "") + "@" if s.get("USER") else ""
        return f"postgres://{auth}{host}:{port}/{s['NAME']}"
    return f"sqlite:///{s['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database_url(), "HMS_DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("HMS_TESTING", None)
    env.update(extra)
    return env


class Proc:
    """A child process started in its own session; stop() ends it and its children."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    started: list[Proc] = []

    def _spawn(*args: str, **env: str) -> Proc:
        proc = Proc([sys.executable, str(ROOT / "manage.py"), *args], subprocess_env(**env),
                    tmp_path / f"{args[0]}-{len(started)}.log")
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        proc.stop()


@pytest.fixture
def demo_fleet(demo, stop_local_instances, spawn):  # type: ignore[no-untyped-def]
    """The demo services at one running instance each, with a real controller and a real
    qcluster (two workers); yields the qcluster process (its output explains a failed run)."""
    from fleet.actions import scale_service
    from fleet.models import Instance, Service

    spawn("controller")
    cluster = spawn("qcluster", HMS_Q_WORKERS="2")
    for svc in Service.objects.filter(name__in=["HMS-SVC", "analytics", "HMS-API"]):
        assert scale_service(svc, 1, actor="system:test").decision.allowed
    wait_for(lambda: Instance.objects.filter(state=Instance.State.RUNNING).count() == 3, timeout=60,
             interval=0.2, message="one running instance of each sample service")
    return cluster


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def stop_local_instances(db: None) -> Iterator[None]:
    """Whatever a test started with the process driver is stopped afterwards."""
    yield
    from fleet.drivers.process import ProcessDriver
    from fleet.models import Service

    for svc in Service.objects.all():
        ProcessDriver().remove_service(svc.spec())


# --- Docker engine (issue 3) ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_engine():  # type: ignore[no-untyped-def]
    """A reachable Docker engine in an active swarm, with the sample image built. Without one the
    test is skipped with the reason printed; under CI (CI=true) a missing engine fails the run."""
    import docker
    from django.conf import settings

    from fleet.sample.image import build_sample_image, image_exists

    try:
        client = docker.from_env(timeout=10)
        client.ping()
        swarm = client.info().get("Swarm", {}).get("LocalNodeState")
        if swarm != "active":
            raise RuntimeError(f"swarm is {swarm!r}, not active (docker swarm init --advertise-addr 127.0.0.1)")
        if not image_exists(settings.HMS_SAMPLE_IMAGE, client=client):
            build_sample_image(settings.HMS_SAMPLE_IMAGE, client=client)
    except Exception as exc:
        reason = f"no usable Docker engine: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture
def docker_cleanup(docker_engine, db):  # type: ignore[no-untyped-def]
    """Remove, before and after the test, the containers and Swarm services this test console
    created (by label, and only this console's namespace: never another console's)."""
    from fleet.drivers.process import console_namespace

    def _clean() -> None:
        selector = {"label": ["hmsmgmt.managed=true", f"hmsmgmt.namespace={console_namespace()}"]}
        for svc in docker_engine.api.services(filters=selector):
            docker_engine.api.remove_service(svc["ID"])
        for c in docker_engine.api.containers(all=True, filters=selector):
            try:
                docker_engine.api.remove_container(c["Id"], force=True)
            except Exception:
                pass  # already being removed

    _clean()
    yield docker_engine
    _clean()


# --- real browser (Playwright driving Debian's chromium; no browser download needed) -----------
CHROMIUM = os.environ.get("HMS_CHROMIUM", "/usr/bin/chromium")
# Playwright's sync API runs an event loop; Django's async-safety check would refuse ORM calls
# made by the test thread while it is alive.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium not found at {CHROMIUM}: CI must install Debian's chromium")
        pytest.skip(f"chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--no-first-run",
                  "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()




# --- services with settings ---------------------------------------------------------------------------
def service_with(name: str, *, command: str = "{python} -m fleet.sample --port {port}", **fields: Any) -> Any:
    """A service created through fleet's action, with any of its probe, SLO and autoscaler settings
    set in the rows of the apps that own them (test set-up: no audit entry for the settings)."""
    from autoscaling.models import AutoscaleSettings
    from fleet import actions
    from fleet.models import Service
    from health.models import ProbeSettings
    from slo.models import Objectives

    parts = {model: {k: fields.pop(k) for k in list(fields) if k in {f.name for f in model._meta.fields}}
             for model in (ProbeSettings, Objectives, AutoscaleSettings)}
    svc = Service(name=name, command=command, **fields)
    actions.save_service(svc, actor="system:test", created=True)
    for model, values in parts.items():
        if values:
            model.objects.filter(pk=svc.pk).update(**values)
    return Service.objects.get(pk=svc.pk)
