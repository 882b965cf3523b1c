"""/healthz and /readyz: unauthenticated, cheap, never redirected; /readyz names what is not
ready (the database, pending migrations, the broker) against real unreachable addresses, and a
real private PostgreSQL stopped during the test."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connections
from django.db.utils import load_backend
from django.test import Client
from django_q.conf import Conf

from console import health_views


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alias(django_db_blocker) -> Iterator:
    """Add a database connection under a new alias for the test, and remove it. Not through
    DATABASES: a connection Django's test case did not know at set-up counts as created on the fly,
    so the test may use it (Django refuses queries to configured aliases a test did not declare)."""
    added: list[str] = []

    def _add(name: str, **db: object) -> str:
        filled = connections.configure_settings({"default": {**connections.settings["default"]}, name: db})[name]
        connections[name] = load_backend(filled["ENGINE"]).DatabaseWrapper(filled, name)
        added.append(name)
        return name

    with django_db_blocker.unblock():  # pytest-django's blocker knows no alias either
        yield _add
    for name in added:
        try:
            connections[name].close()
        except Exception:
            pass
        del connections[name]
        health_views._migrations_cache.pop(name, None)


def postgres_at(port: int, name: str = "postgres", host: str = "127.0.0.1") -> dict[str, object]:
    return {"ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": "postgres", "HOST": host,
            "PORT": port, "OPTIONS": {"connect_timeout": 3}}


@pytest.mark.django_db
def test_healthz_answers_without_database_or_sign_in(django_assert_num_queries, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True  # production: plain HTTP is redirected, the probes are not
    client = Client()
    with django_assert_num_queries(0):
        r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r["Cache-Control"].startswith("max-age=0")
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert client.get("/").status_code == 301  # the redirect itself is still on for everything else


@pytest.mark.django_db
def test_readyz_is_200_when_everything_answers() -> None:
    r = Client().get("/readyz")
    assert r.status_code == 200, r.content
    assert r.json() == {"status": "ok", "failing": [],
                        "checks": {"database": "ok", "migrations": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_readyz_caches_the_migration_check(django_assert_max_num_queries) -> None:
    health_views._migrations_cache.clear()
    Client().get("/readyz")
    # Within the cache window: SELECT 1 and the broker's queue length, no migration table read.
    with django_assert_max_num_queries(2):
        Client().get("/readyz")


@pytest.mark.django_db
def test_readyz_503_names_the_database_on_a_closed_port(alias, monkeypatch) -> None:
    monkeypatch.setattr(health_views, "DATABASE_ALIAS", alias("down", **postgres_at(closed_port())))
    monkeypatch.setattr(Conf, "ORM", "down")  # the ORM broker lives in that database too
    r = Client().get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "fail" and body["failing"] == ["database"]
    assert "OperationalError" in body["checks"]["database"]
    assert body["checks"]["migrations"].startswith("skipped")
    assert body["checks"]["broker"].startswith("skipped")


@pytest.mark.django_db
def test_readyz_503_names_the_broker_when_its_database_is_away(alias, monkeypatch) -> None:
    # The ORM broker on a connection of its own (Q_CLUSTER["orm"]) that is unreachable, while the
    # console's database answers: only the broker fails.
    monkeypatch.setattr(Conf, "ORM", alias("qdown", **postgres_at(closed_port())))
    r = Client().get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["failing"] == ["broker"]
    assert "OperationalError" in body["checks"]["broker"]
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"


@pytest.mark.django_db
def test_readyz_503_names_the_broker_when_redis_is_away(monkeypatch) -> None:
    pytest.importorskip("redis", reason="the redis client is not installed (HMS_REDIS_URL needs it)")
    from django_q.brokers.redis_broker import Redis

    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{closed_port()}/0")
    monkeypatch.setattr(health_views, "get_broker", lambda: Redis(list_key="hmsmgmt"))
    r = Client().get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["failing"] == ["broker"]
    assert "ConnectionError" in body["checks"]["broker"]
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"


def test_check_database_on_an_unreachable_address(alias) -> None:
    # No test database needed: the check never touches "default". TEST-NET-1 never answers; the
    # connect timeout bounds the wait.
    reason = health_views.check_database(alias("blackhole", **postgres_at(5432, host="192.0.2.1")))
    assert reason.startswith("OperationalError")


# --- a real PostgreSQL of the test's own, stopped half-way -------------------------------------------
@pytest.fixture
def private_postgres() -> Iterator[tuple[int, Callable[[], None]]]:
    """(port, stop) of a PostgreSQL cluster made for this test in a temporary directory."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("initdb/pg_ctl not installed")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="hms-ops-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", closed_port()

    def stop(mode: str = "fast") -> None:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", mode, "-w", "stop"], capture_output=True,
                       timeout=60)

    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-N"], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-t", "60", "-l", str(base / "log"), "-o",
                        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=90)
        yield port, stop
    finally:
        stop("immediate")  # already stopped by the test, normally: then this does nothing
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_readiness_follows_a_real_postgresql_that_stops(alias, private_postgres, monkeypatch) -> None:
    port, stop = private_postgres
    pg = alias("private", **postgres_at(port))
    monkeypatch.setattr(health_views, "broker_uses_database", lambda: False)
    monkeypatch.setattr(health_views, "check_broker", lambda: "ok")
    assert health_views.check_database(pg) == "ok"
    # A fresh cluster: reachable, but nothing migrated.
    up = health_views.readiness(pg)
    assert up["failing"] == ["migrations"], up
    assert "not applied" in up["checks"]["migrations"]

    stop()  # the server goes away under an open connection, as in a fail-over or a crash
    health_views._migrations_cache.clear()
    down = health_views.readiness(pg)
    assert down["failing"] == ["database"], down
    assert "OperationalError" in down["checks"]["database"]
