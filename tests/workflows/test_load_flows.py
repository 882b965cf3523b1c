"""manage.py load_flows: YAML/JSON in, refusals that name the problem, all or nothing, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEntry
from tests.conftest import ROOT
from workflows.models import WorkflowDefinition

pytestmark = pytest.mark.django_db


def test_it_loads_the_example_flows_and_is_idempotent() -> None:
    call_command("load_flows", str(ROOT / "flows"))
    assert {"reportingFlow", "fanOutReport", "releaseWithApproval"} <= set(
        WorkflowDefinition.objects.values_list("slug", flat=True))
    entries = AuditEntry.objects.filter(action="flow.create").count()
    call_command("load_flows", str(ROOT / "flows"))
    assert AuditEntry.objects.filter(action__startswith="flow.").count() == entries  # unchanged: no entry


def test_it_updates_a_changed_flow_with_one_audit_entry(tmp_path: Path) -> None:
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"slug": "f", "name": "F", "steps": [{"name": "a", "action": "noop"}]}))
    call_command("load_flows", str(f))
    f.write_text(json.dumps({"slug": "f", "name": "F2", "steps": [{"name": "a", "action": "noop"}]}))
    call_command("load_flows", str(f))
    assert WorkflowDefinition.objects.get(slug="f").name == "F2"
    assert AuditEntry.objects.filter(action="flow.update").count() == 1


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([{"name": "a", "action": "noop", "depends_on": ["b"]}, {"name": "b", "action": "noop", "depends_on": ["a"]}],
         "cycle"),
        ([{"name": "a", "action": "fly"}], "unknown action 'fly'"),
        ([{"name": "a", "action": "noop", "depends_on": ["ghost"]}], "depends on unknown step 'ghost'"),
        ([{"name": "a", "action": "sleep", "params": {"seconds": "soon"}}], "bad params"),
    ],
)
def test_invalid_definitions_are_refused_naming_the_problem(tmp_path: Path, steps: list, problem: str) -> None:
    good = {"slug": "good", "name": "Good", "steps": [{"name": "x", "action": "noop"}]}
    (tmp_path / "a.yaml").write_text(json.dumps(good))
    (tmp_path / "b.yaml").write_text(json.dumps({"slug": "bad", "steps": steps}))
    with pytest.raises(CommandError) as info:
        call_command("load_flows", str(tmp_path))
    assert problem in str(info.value) and "b.yaml" in str(info.value) and "'bad'" in str(info.value)
    assert not WorkflowDefinition.objects.filter(slug__in=["good", "bad"]).exists()  # all or nothing


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("slug: [unclosed")
    with pytest.raises(CommandError, match="cannot read"):
        call_command("load_flows", str(tmp_path / "x.yaml"))
    with pytest.raises(CommandError, match="no such file"):
        call_command("load_flows", str(tmp_path / "missing.yaml"))
