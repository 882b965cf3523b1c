"""Liveness and readiness for load balancers, systemd and container orchestrators.

- GET /healthz: the process is up and serving. Touches no database, needs no sign-in.
- GET /readyz: it can do its work: the database answers, every migration is applied and the task
  broker answers. 200 {"status": "ok", "checks": {...}}, or 503 with the failing parts named in
  "failing" and each check's reason under "checks".

Both are unauthenticated (a probe carries no credentials) and cheap: the database check is one
`SELECT 1`, the broker check one ping or queue-length call, and the migration check, which loads
every migration file, is cached for MIGRATIONS_CACHE_SECONDS per process.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker
from django_q.conf import Conf

MIGRATIONS_CACHE_SECONDS = 5.0
OK = "ok"
DATABASE_ALIAS = DEFAULT_DB_ALIAS  # the connection /readyz judges (tests point it elsewhere)

_migrations_lock = threading.Lock()
_migrations_cache: dict[str, tuple[float, str]] = {}  # alias -> (checked at, monotonic; result)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


def check_database(using: str = DEFAULT_DB_ALIAS) -> str:
    """"ok", or why the database does not answer `SELECT 1`."""
    try:
        # A connection that broke since its last use is replaced by Django itself at the start of
        # the request (CONN_HEALTH_CHECKS on PostgreSQL), so this is a query, not a reconnect.
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"; the reason goes to the caller
        _drop(using)
        return _reason(exc)
    return OK


def check_migrations(using: str = DEFAULT_DB_ALIAS, *, max_age: float = MIGRATIONS_CACHE_SECONDS) -> str:
    """"ok" when the migration plan to the latest leaf nodes is empty, else how many are pending
    (a web process started on new code before `manage.py migrate` ran). Cached for max_age."""
    now = time.monotonic()
    cached = _migrations_cache.get(using)
    if cached is not None and now - cached[0] < max_age:
        return cached[1]
    with _migrations_lock:  # one thread of a gthread worker loads the migration graph, not all
        cached = _migrations_cache.get(using)
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1]
        try:
            executor = MigrationExecutor(connections[using])
            plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
            result = OK if not plan else (f"{len(plan)} migration(s) not applied, first "
                                          f"{plan[0][0].app_label}.{plan[0][0].name}")
        except Exception as exc:
            _drop(using)
            result = _reason(exc)
        _migrations_cache[using] = (time.monotonic(), result)
        return result


def check_broker() -> str:
    """"ok", or why django-q2's broker does not answer: Redis is pinged; the ORM broker's ping is
    always true, so its queue length is read instead (a query on its table)."""
    try:
        broker = get_broker()
        if broker.ping() is False:
            return f"{broker.info()} did not answer a ping"
        broker.queue_size()
    except Exception as exc:
        return _reason(exc)
    return OK


def _drop(using: str) -> None:
    """Close a connection a check failed on, so the next request dials again (not inside a
    transaction: that is its owner's to end)."""
    try:
        if not connections[using].in_atomic_block:
            connections[using].close()
    except Exception:
        pass  # it is broken already; the next use reconnects


def broker_uses_database() -> bool:
    return bool(Conf.ORM)


def readiness(using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Run the checks; a check that needs an unreachable database is skipped, not failed twice."""
    checks: dict[str, str] = {"database": check_database(using)}
    db_up = checks["database"] == OK
    checks["migrations"] = check_migrations(using) if db_up else "skipped: database unreachable"
    if db_up or not broker_uses_database():
        checks["broker"] = check_broker()
    else:
        checks["broker"] = "skipped: the ORM broker lives in the unreachable database"
    failing = [name for name, result in checks.items() if result != OK and not result.startswith("skipped")]
    return {"status": "fail" if failing else OK, "failing": failing, "checks": checks}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": OK})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    body = readiness(DATABASE_ALIAS)
    return JsonResponse(body, status=200 if body["status"] == OK else 503)


def worker_echo(value: str) -> str:
    """The task `manage.py healthcheck worker` sends through the queue when the ORM broker keeps
    no shared cluster stats: a worker that returns it is taking tasks."""
    return value
