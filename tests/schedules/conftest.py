from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workflows import actions as workflow_actions
from workflows.models import WorkflowDefinition


@pytest.fixture
def flow(db: None) -> WorkflowDefinition:
    """A one-step flow nobody executes here (no workers): its runs stay active until a test ends them."""
    return workflow_actions.save_flow(
        WorkflowDefinition(slug="nightly", name="nightly", steps=[{"name": "s", "action": "python",
                                                                   "params": {"callable": "echo"}}]),
        actor="system:test", created=True)


def at(sec: float) -> datetime:
    """2026-01-01 00:00:00 UTC plus sec seconds."""
    return datetime(2026, 1, 1, tzinfo=UTC).replace(microsecond=0) + __import__("datetime").timedelta(seconds=sec)
