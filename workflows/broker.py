"""django-q2's ORM broker, woken by PostgreSQL LISTEN/NOTIFY instead of polling.

The stock ORM broker polls its table every `poll` seconds while idle: at the 0.05 s a low latency
needs, that is ~20 queries/s per cluster doing nothing. Here enqueue sends NOTIFY (delivered at
commit, so a worker never wakes for a task it cannot see yet) and an idle pusher blocks on LISTEN,
re-checking the table every HMS_Q_IDLE_WAIT seconds (tasks whose lock lapsed are retried without a
notification). Latency stays a few milliseconds; idle load drops to a query every few seconds.

Enable with Q_CLUSTER["broker_class"] = "workflows.broker.NotifyORM" (settings do so on PostgreSQL).
On any other database it behaves exactly like the ORM broker (settings use LeaseORM there: the ORM
broker whose redelivery lock follows a long task's own timeout).

A database outage does not end the pusher: django-q2's pusher logs a traceback, sleeps 10 s and
exits on any dequeue error (its sentinel starts another), so an outage cost a traceback every 10 s
and up to 10 s more after the database came back. Here the outage is logged once (core.dberrors)
and the pusher retries every OUTAGE_RETRY seconds, picking tasks up again within that.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from time import sleep
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from core.dberrors import drop, outage, unavailable

log = logging.getLogger(__name__)
CHANNEL = "hmsmgmt_q"
OUTAGE_RETRY = 0.5  # seconds between the pusher's tries while the database is down


def idle_wait() -> float:
    try:
        return max(0.1, settings.HMS_Q_IDLE_WAIT)
    except ValueError:
        return 2.0


class LeaseORM(ORM):
    """The ORM broker with a redelivery lock that follows the task's own timeout.

    The stock broker locks a dequeued task for Q_CLUSTER["retry"] seconds and then hands it out
    again, however long the task may run. A long step's task (dispatch.enqueue gives it a
    django-q2 `timeout` of its own, hours maybe) would be delivered a second time while its
    worker still works on it: harmless (the step's claim refuses it) but a worker's time and a
    misleading "not claimed". Here the lock lasts the task's timeout plus the same margin as
    retry has over the cluster's timeout."""

    def timeout(self, task: Any) -> Any:
        base = super().timeout(task)
        try:
            own = SignedPackage.loads(task.payload).get("timeout")
        except Exception:  # an unreadable payload is the worker's to report; lock it as usual
            return base
        if not isinstance(own, (int, float)) or own <= (Conf.TIMEOUT or 0):
            return base
        margin = max(1, (Conf.RETRY or 0) - (Conf.TIMEOUT or 0))
        return max(base, timezone.now() + timedelta(seconds=float(own) + margin))


class NotifyORM(LeaseORM):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener: Any = None

    @staticmethod
    def _is_postgres() -> bool:
        return connections[Conf.ORM or "default"].vendor == "postgresql"  # Conf.ORM is None beside Redis

    def enqueue(self, task: Any) -> Any:
        if not self._is_postgres():
            return super().enqueue(task)
        # The ORM broker's row and the wake-up in one statement (one round trip on the hot path
        # of every workflow start): RETURNING may call functions, and NOTIFY still waits for commit.
        self.get_connection()  # as the ORM broker does: drops a stale connection outside a transaction
        table = OrmQ._meta.db_table
        key = self.list_key or Conf.CLUSTER_NAME
        with connections[Conf.ORM or "default"].cursor() as cur:
            cur.execute(f'INSERT INTO "{table}" ("key", "payload", "lock") VALUES (%s, %s, %s) '
                        "RETURNING id, pg_notify(%s, '')", [key, task, timezone.now(), CHANNEL])
            return cur.fetchone()[0]

    def dequeue(self) -> list[tuple[Any, Any]] | None:
        try:
            tasks = self._dequeue()
        except Exception as exc:
            if (db := unavailable(exc)) is None:
                raise
            outage.failed("the task queue's pusher", db)
            drop(Conf.ORM)
            self._close()
            sleep(OUTAGE_RETRY)
            return None
        # Back when a dequeue answered, and on PostgreSQL its LISTEN connection too (a dequeue whose
        # wait broke on a vanishing server also returns, after a query made just before).
        if outage.active and (self._listener is not None or not self._is_postgres()):
            outage.recovered("the task queue's pusher")
        return tasks

    def _dequeue(self) -> list[tuple[Any, Any]] | None:
        if not self._is_postgres():
            return super().dequeue()
        # Listen before looking, so a task enqueued between the look and the wait still wakes us.
        listener = self._listen()
        tasks = self.get_connection().filter(key=self.list_key, lock__lt=timezone.now())[0:Conf.BULK]
        task_list = []
        for task in tasks:
            # The same conditional claim as the ORM broker: another cluster may have been faster.
            if self.get_connection().filter(id=task.id, lock=task.lock).update(lock=self.timeout(task)):
                task_list.append((task.pk, task.payload))
        if task_list:
            return task_list
        if listener is None:
            sleep(Conf.POLL)
            return None
        try:
            for _ in listener.notifies(timeout=idle_wait(), stop_after=1):
                pass
        except Exception as exc:  # the listening connection broke: fall back to a poll, reconnect next time
            if unavailable(exc) is not None:
                outage.failed("the task queue's listener", exc)  # the server went away: logged once
            else:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
            self._close()
            sleep(Conf.POLL)
        return None

    def _listen(self) -> Any:
        if self._listener is not None and not self._listener.closed:
            return self._listener
        import psycopg

        try:
            params = connections[Conf.ORM or "default"].get_connection_params()
            params = {k: v for k, v in params.items() if k not in ("cursor_factory", "context", "prepare_threshold")}
            self._listener = psycopg.connect(**params, autocommit=True)
            self._listener.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:
            if unavailable(exc) is not None:
                outage.failed("the task queue's listener", exc)  # the query after it fails too
            else:
                log.warning("cannot LISTEN; polling instead", exc_info=True)
            self._listener = None
        return self._listener

    def _close(self) -> None:
        try:
            if self._listener is not None:
                self._listener.close()
        finally:
            self._listener = None
