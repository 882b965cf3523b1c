"""DAG validation and the scheduling rules, without a database."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from workflows import dag


def step(name: str, *deps: str, action: str = "noop", **extra: object) -> dict:
    return {"name": name, "action": action, "depends_on": list(deps), **extra}


def refusal(steps: object) -> str:
    with pytest.raises(ValidationError) as info:
        dag.validate_definition(steps)
    return " ".join(m for msgs in info.value.message_dict.values() for m in msgs)


def test_a_valid_fan_out_and_fan_in_passes() -> None:
    dag.validate_definition([step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")])


def test_it_names_the_cycle() -> None:
    msg = refusal([step("a", "c"), step("b", "a"), step("c", "b")])
    assert "cycle" in msg
    assert "a → b → c → a" in msg or "b → c → a → b" in msg or "c → a → b → c" in msg


def test_it_refuses_a_self_dependency() -> None:
    assert "depends on itself" in refusal([step("a", "a")])


def test_it_names_an_unknown_action() -> None:
    msg = refusal([step("a", action="teleport")])
    assert "unknown action 'teleport'" in msg and "http" in msg


def test_it_names_a_missing_dependency() -> None:
    msg = refusal([step("a"), step("b", "nope")])
    assert "step 'b' depends on unknown step 'nope'" in msg


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (step("s", action="sleep", params={"seconds": -1}), "params.seconds"),
        (step("s", action="sleep", params={"minutes": 1}), "unknown params minutes"),
        (step("h", action="http", params={"path": "/work"}), "params.service"),
        (step("h", action="http", params={"service": "x", "path": "work"}), "params.path"),
        (step("h", action="http", params={"service": "x", "method": "BREW"}), "params.method"),
        (step("k", action="scale", params={"service": "x"}), "params.instances is required"),
        (step("k", action="scale", params={"service": "x", "instances": 1.5}), "params.instances"),
        (step("p", action="python", params={"callable": "nope"}), "not registered"),
        (step("a", action="approval", params={"prompt": 3}), "params.prompt"),
        (step("n", params={"x": 1}), "unknown params x"),
        (step("r", retries=-1), "retries"),
        (step("r", retries=True), "retries"),
        (step("t", timeout=0), "timeout"),
        (step("b", backoff="soon"), "backoff"),
        (step("o", optional="yes"), "optional"),
        (step("u", colour="red"), "unknown keys colour"),
    ],
)
def test_it_refuses_bad_params_naming_the_step(bad: dict, expected: str) -> None:
    msg = refusal([bad])
    assert expected in msg
    assert f"'{bad['name']}'" in msg


def test_it_refuses_duplicate_names_and_empty_flows() -> None:
    assert "used twice" in refusal([step("a"), step("a")])
    assert "non-empty" in refusal([])
    assert "must be an object" in refusal(["a"])


def test_references_to_data_are_accepted_where_numbers_go() -> None:
    dag.validate_definition([step("s", action="sleep", params={"seconds": "$data.seconds"}),
                             step("k", "s", action="scale", params={"service": "x", "instances": "$data.n"})])


def test_levels_group_steps_by_depth() -> None:
    steps = [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"), step("e")]
    assert dag.levels(steps) == [["a", "e"], ["b", "c"], ["d"]]


def test_a_failed_required_dependency_blocks_and_an_optional_one_does_not() -> None:
    states = {"a": ("succeeded", False), "b": ("failed", False), "o": ("failed", True), "r": ("running", False)}
    assert dag.dependency_state(["a"], states) == dag.SATISFIED
    assert dag.dependency_state(["a", "o"], states) == dag.SATISFIED
    assert dag.dependency_state(["a", "r"], states) == dag.WAIT
    assert dag.dependency_state(["r", "b"], states) == dag.BLOCKED


def test_run_outcome() -> None:
    assert dag.run_outcome([("succeeded", False), ("running", False)]) is None
    assert dag.run_outcome([("succeeded", False), ("failed", True)]) == "succeeded"
    assert dag.run_outcome([("succeeded", False), ("failed", False), ("skipped", False)]) == "failed"
    assert dag.run_outcome([("succeeded", False), ("cancelled", False)]) == "cancelled"
    assert dag.run_outcome([("waiting", False)]) is None


def test_backoff_doubles_and_is_capped() -> None:
    assert [dag.backoff_delay(0.5, a) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert dag.backoff_delay(10, 30) == 300


def test_it_refuses_text_the_database_cannot_store() -> None:
    msg = refusal([step("a", params={"note": "x\x00y"})])
    assert "NUL" in msg and "[0].params.note" in msg
