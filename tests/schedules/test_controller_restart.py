"""A per-second schedule fired by real controller processes: exactly once per second across a
kill -TERM and a restart (and, on PostgreSQL, a standby controller taking over from the leader)."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest
from django.db import connection

from audit import events
from audit.models import AuditEntry
from controller.models import LoopBeat
from schedules import actions
from schedules.models import ScheduleFire
from tests.conftest import wait_for
from workflows.models import WorkflowRun

LOOP = ("controller", "--loops", "schedules")


def fires() -> int:
    return ScheduleFire.objects.count()


def stop(proc, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    proc.kill(signal.SIGTERM)
    proc.popen.wait(timeout=timeout)
    assert proc.popen.returncode == 0, proc.output()


@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_per_second_schedule_fires_once_per_second_across_restarts(flow, personas, spawn) -> None:
    s = actions.create_schedule(flow, {"cron": "* * * * * *", "overlap_policy": "allow", "missed_policy": "each",
                                       "missed_bound": 100}, owner=personas["alice"], actor=personas["alice"])
    first = spawn(*LOOP)
    wait_for(lambda: fires() >= 1, timeout=60, interval=0.1, message=f"a first fire; {first.output()}")
    start = fires()
    wait_for(lambda: fires() >= start + 5, timeout=30, interval=0.1, message="5 s of fires")
    if connection.vendor == "postgresql":
        # A second controller beside the leader stands by; on the leader's TERM it takes over.
        standby = spawn(*LOOP)
        wait_for(lambda: LoopBeat.objects.filter(pid=standby.pid, loop="schedules").exists(), timeout=60,
                 interval=0.1, message=f"the standby's row; {standby.output()}")
        stop(first)
        at = fires()
        wait_for(lambda: fires() >= at + 5, timeout=30, interval=0.1, message=f"the standby firing; {standby.output()}")
        first = standby
    stop(first)  # then a plain restart: the seconds it was down are missed and caught up (policy each)
    down_at = fires()
    time.sleep(2.5)  # down for seconds, however fast a process starts: those fires come late
    second = spawn(*LOOP)
    wait_for(lambda: fires() >= down_at + 8, timeout=60, interval=0.1,
             message=f"fires after restart; {second.output()}")
    stop(second)

    rows = list(ScheduleFire.objects.filter(schedule=s).order_by("scheduled_for"))
    instants = [f.scheduled_for for f in rows]
    assert len(instants) == len(set(instants))  # never twice
    expected = [instants[0] + timedelta(seconds=i) for i in range(len(instants))]
    assert instants == expected, "a second is missing"  # none missing in the window
    assert all(f.outcome == "started" and f.run_id for f in rows)
    assert WorkflowRun.objects.count() == len(rows) == len({f.run_id for f in rows})
    assert AuditEntry.objects.filter(action=events.SCHEDULE_FIRE, outcome="success").count() == len(rows)
    late = [f for f in rows if f.fired_at - f.scheduled_for > timedelta(seconds=1)]
    assert late, "the restart gap was caught up by the missed-fires policy (fires later than 1 s)"
    for f in rows:
        assert f.run.created_at >= f.scheduled_for  # never early
