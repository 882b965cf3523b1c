"""The LISTEN/NOTIFY broker: an idle pusher wakes on enqueue rather than on a timer."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from workflows.broker import NotifyORM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def test_an_idle_dequeue_wakes_on_enqueue(monkeypatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    # With a 600 s idle wait, only the notification can end the wait before the test's 60 s timeout.
    monkeypatch.setenv("HMS_Q_IDLE_WAIT", "600")
    broker = NotifyORM(list_key="broker-test")

    def enqueue_later() -> None:
        try:
            NotifyORM(list_key="broker-test").enqueue("payload")
        finally:
            connection.close()

    timer = threading.Timer(0.5, enqueue_later)
    timer.start()
    try:
        got = None
        for _ in range(2):  # the empty look, the wait ended by NOTIFY, then the look that finds it
            got = broker.dequeue()
            if got:
                break
        assert got is not None and [payload for _, payload in got] == ["payload"]
    finally:
        timer.join()
        broker._close()
