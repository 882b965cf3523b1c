"""The permission table's shared data: one run of carol's and one of bob's (the IDOR target)."""

from __future__ import annotations

import pytest

from tests.hmsmgmt.test_permission_table import Ctx
from workflows import actions as wf_actions
from workflows.models import WorkflowDefinition


@pytest.fixture
def ctx(personas, demo) -> Ctx:
    carol_run = wf_actions.start_run(WorkflowDefinition.objects.get(slug="analyticsReport"), {"seconds": 30},
                                     actor=personas["carol"]).run
    bob_run = wf_actions.start_run(WorkflowDefinition.objects.get(slug="analyticsReport"), {"seconds": 30},
                                   actor=personas["bob"]).run
    assert carol_run and bob_run
    return Ctx(carol_run, bob_run)
