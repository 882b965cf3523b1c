"""The start path's cost (issue 18, docs/performance.md): what a start and the controller's timer
sweep cost in queries, and that the roots' tasks commit (or roll back) with the run."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from tests.workflows.helpers import make_flow, step
from workflows import actions, dispatch, sweeps
from workflows.models import StepRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")


def test_sweep_due_is_one_query_without_the_default_ordering(alice) -> None:
    # StepRun's default ordering (run, id) inside a DISTINCT made it return every due row.
    with CaptureQueriesContext(connection) as ctx:
        assert sweeps.sweep_due() == {"swept": 0, "retried": 0}
    assert len(ctx.captured_queries) == 1
    sql = ctx.captured_queries[0]["sql"].upper()
    assert "DISTINCT" in sql and "ORDER BY" not in sql


def test_sweep_due_promotes_many_due_retries_with_one_look(alice) -> None:
    flow = make_flow("r", [step("a", retries=2)])
    runs = [actions.start_run(flow, {}, actor=alice).run for _ in range(5)]
    StepRun.objects.filter(run__in=runs).update(status=StepRun.Status.RETRYING, not_before=timezone.now())
    assert sweeps.sweep_due() == {"swept": 0, "retried": 5}
    assert set(StepRun.objects.filter(run__in=runs).values_list("status", flat=True)) == {"queued"}


def test_retry_due_index_exists() -> None:
    names = {ix.name for ix in StepRun._meta.indexes}
    assert "steprun_retry_due" in names


def test_the_roots_tasks_are_written_in_the_start_transaction(alice) -> None:
    """With the ORM broker a start's task rows are part of its transaction: visible with the run,
    gone with it on a rollback (no task for a run that never existed)."""
    flow = make_flow("two-roots", [step("a"), step("b"), step("c", "a")])
    before = OrmQ.objects.count()
    with transaction.atomic():
        assert dispatch.queue_commits_with_us() is True
        run = actions.start_run(flow, {}, actor=alice).run
        assert OrmQ.objects.count() - before == 2  # a and b, inside the transaction
    assert run is not None
    with pytest.raises(RuntimeError), transaction.atomic():
        actions.start_run(flow, {}, actor=alice)
        raise RuntimeError("rolled back")
    assert OrmQ.objects.count() - before == 2


def test_the_steps_broker_is_one_per_process() -> None:
    assert dispatch._broker() is dispatch._broker()
