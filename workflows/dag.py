"""Validation of a flow's steps as a DAG, and the scheduling rules the engine follows.

Refusals name the problem (the step, the field, the cycle) so `load_flows`, admin and the API can
show it as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError

from core import safejson
from workflows.steps import ACTIONS, validate_params

STEP_KEYS = {"name", "action", "params", "depends_on", "retries", "backoff", "timeout", "optional", "trigger_rule",
             "approvers", "allow_self_approval"}
ALL_SUCCESS, ALL_DONE, ONE_FAILED = "all_success", "all_done", "one_failed"
TRIGGER_RULES = (ALL_SUCCESS, ALL_DONE, ONE_FAILED)
APPROVER_KEYS = {"group", "permission"}
MAX_RETRIES = 20
MAX_TIMEOUT = 7 * 24 * 3600  # approvals may wait a week; worker steps are clamped by the worker


def validate_definition(steps: Any, tags: Any = None) -> None:
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise ValidationError({"tags": "tags must be a list of strings"})
    if not isinstance(steps, list) or not steps:
        raise ValidationError({"steps": "steps must be a non-empty list"})
    if (why := safejson.problem(steps)) is not None:  # e.g. "\u0000" in a param: PostgreSQL refuses it
        raise ValidationError({"steps": why.replace("The value", "A step value", 1)})
    names: set[str] = set()
    for i, step in enumerate(steps):
        _validate_step(i, step, names)
    for step in steps:
        for dep in step.get("depends_on", []):
            if dep not in names:
                raise ValidationError({"steps": f"step '{step['name']}' depends on unknown step '{dep}' "
                                                 "(missing dependency)"})
    cycle = find_cycle(steps)
    if cycle:
        raise ValidationError({"steps": f"the steps form a cycle: {' → '.join(cycle)}"})


def _validate_step(i: int, step: Any, names: set[str]) -> None:
    if not isinstance(step, dict):
        raise ValidationError({"steps": f"step {i} must be an object"})
    name = step.get("name")
    if not isinstance(name, str) or not name or len(name) > 100:
        raise ValidationError({"steps": f"step {i} needs a name (1-100 characters)"})
    if name in names:
        raise ValidationError({"steps": f"step name '{name}' is used twice"})
    names.add(name)
    extra = set(step) - STEP_KEYS
    if extra:
        raise ValidationError({"steps": f"step '{name}': unknown keys {', '.join(sorted(extra))} "
                                        f"(allowed: {', '.join(sorted(STEP_KEYS))})"})
    action = step.get("action")
    if action not in ACTIONS:
        raise ValidationError({"steps": f"step '{name}': unknown action '{action}' (known: "
                                        f"{', '.join(sorted(ACTIONS))})"})
    params = step.get("params", {})
    if not isinstance(params, dict):
        raise ValidationError({"steps": f"step '{name}': params must be an object"})
    try:
        validate_params(action, params)
    except ValueError as exc:
        raise ValidationError({"steps": f"step '{name}' ({action}): bad params: {exc}"}) from None
    for key, top in (("retries", MAX_RETRIES), ("timeout", MAX_TIMEOUT)):
        value = step.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top):
            raise ValidationError({"steps": f"step '{name}': {key} must be an integer between 0 and {top}"})
    if step.get("timeout") == 0:
        raise ValidationError({"steps": f"step '{name}': timeout must be at least 1 second"})
    backoff = step.get("backoff")
    if backoff is not None and (not isinstance(backoff, (int, float)) or isinstance(backoff, bool)
                                or not 0 <= backoff <= 3600):
        raise ValidationError({"steps": f"step '{name}': backoff must be a number of seconds between 0 and 3600"})
    if not isinstance(step.get("optional", False), bool):
        raise ValidationError({"steps": f"step '{name}': optional must be true or false"})
    deps = step.get("depends_on", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ValidationError({"steps": f"step '{name}': depends_on must be a list of step names"})
    if name in deps:
        raise ValidationError({"steps": f"the steps form a cycle: step '{name}' depends on itself"})
    rule = step.get("trigger_rule", ALL_SUCCESS)
    if rule not in TRIGGER_RULES:
        raise ValidationError({"steps": f"step '{name}': unknown trigger_rule {rule!r} "
                                        f"(known: {', '.join(TRIGGER_RULES)})"})
    if rule != ALL_SUCCESS and not deps:
        raise ValidationError({"steps": f"step '{name}': trigger_rule {rule} needs depends_on (it reacts to "
                                        "its dependencies)"})
    _validate_approvers(name, action, step)


def _validate_approvers(name: str, action: str, step: dict[str, Any]) -> None:
    """Shape only (pure): that a named group or permission exists is checked where the database
    is at hand (workflows.actions.check_approvers, called by save_flow and the model's clean)."""
    if ("approvers" in step or "allow_self_approval" in step) and action != "approval":
        raise ValidationError({"steps": f"step '{name}': approvers and allow_self_approval apply to approval "
                                        "steps only"})
    if not isinstance(step.get("allow_self_approval", False), bool):
        raise ValidationError({"steps": f"step '{name}': allow_self_approval must be true or false"})
    approvers = step.get("approvers", {})
    if not isinstance(approvers, dict):
        raise ValidationError({"steps": f"step '{name}': approvers must be an object like "
                                        '{"group": "release-managers"} or {"permission": "app.codename"}'})
    extra = set(approvers) - APPROVER_KEYS
    if extra:
        raise ValidationError({"steps": f"step '{name}': approvers: unknown keys {', '.join(sorted(extra))} "
                                        f"(allowed: {', '.join(sorted(APPROVER_KEYS))})"})
    for key in APPROVER_KEYS & set(approvers):
        value = approvers[key]
        if not isinstance(value, str) or not value or len(value) > 150:
            raise ValidationError({"steps": f"step '{name}': approvers.{key} must be a name (1-150 characters)"})
    perm = approvers.get("permission")
    if perm is not None and perm.count(".") != 1:
        raise ValidationError({"steps": f"step '{name}': approvers.permission must read app_label.codename, "
                                        f"got {perm!r}"})


def find_cycle(steps: list[dict[str, Any]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None for a DAG (iterative DFS, three colours)."""
    deps = {s["name"]: list(s.get("depends_on", [])) for s in steps}
    colour: dict[str, int] = dict.fromkeys(deps, 0)  # 0 new, 1 on the stack, 2 done
    for root in deps:
        if colour[root]:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                colour[node] = 1
                path.append(node)
            children = [d for d in deps[node] if d in deps]
            if i < len(children):
                stack.append((node, i + 1))
                child = children[i]
                if colour[child] == 1:
                    # Reversed, the path reads in run order: "a → b" means a runs before b.
                    return list(reversed(path[path.index(child):] + [child]))
                if colour[child] == 0:
                    stack.append((child, 0))
            else:
                colour[node] = 2
                path.pop()
    return None


def topological_order(steps: list[dict[str, Any]]) -> list[str] | None:
    deps = {s["name"]: set(s.get("depends_on", [])) for s in steps}
    order: list[str] = []
    ready = sorted(n for n, d in deps.items() if not d)
    while ready:
        name = ready.pop(0)
        order.append(name)
        for other, d in deps.items():
            if name in d:
                d.discard(name)
                if not d and other not in order and other not in ready:
                    ready.append(other)
    return order if len(order) == len(deps) else None


def levels(steps: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """Steps grouped by depth (longest path from a root): the columns of the run page's DAG."""
    deps = {s["name"]: list(s.get("depends_on", [])) for s in steps}
    depth: dict[str, int] = {}

    def walk(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in depth:
            return depth[name]
        if name in seen:  # a stored cycle cannot happen, but never recurse forever
            return 0
        d = 1 + max((walk(p, seen | {name}) for p in deps[name] if p in deps), default=-1)
        depth[name] = d
        return d

    for name in deps:
        walk(name)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in deps:
        out[depth[name]].append(name)
    return out


# --- scheduling rules (pure; the engine applies them with conditional updates) -----------------

SATISFIED = "satisfied"
BLOCKED = "blocked"
WAIT = "wait"


DONE_STATES = ("succeeded", "failed", "cancelled", "skipped")


def dependency_state(depends_on: Iterable[str], states: Mapping[str, tuple[str, bool]],
                     rule: str = ALL_SUCCESS) -> str:
    """Whether a pending step may start: `states` maps step name → (status, optional), where
    optional means "not required" (see is_required).

    all_success: a dependency is satisfied when it succeeded, or when it was optional and failed;
    a required dependency that failed, was skipped or cancelled blocks the step for good.
    all_done: satisfied once every dependency has finished, in any state (cleanup, notify).
    one_failed: satisfied as soon as one dependency failed (an alert); blocked (skipped) once every
    dependency has finished and none failed.
    """
    if rule == ALL_DONE:
        done = all(states.get(dep, ("pending", False))[0] in DONE_STATES for dep in depends_on)
        return SATISFIED if done else WAIT
    if rule == ONE_FAILED:
        found = [states.get(dep, ("pending", False))[0] for dep in depends_on]
        if "failed" in found:
            return SATISFIED
        return BLOCKED if all(s in DONE_STATES for s in found) else WAIT
    result = SATISFIED
    for dep in depends_on:
        status, optional = states.get(dep, ("pending", False))
        if status == "succeeded" or (optional and status in ("failed", "skipped")):
            continue
        if status in ("failed", "skipped", "cancelled"):
            return BLOCKED
        result = WAIT
    return result


def is_required(optional: bool, rule: str) -> bool:
    """A required step decides the run's outcome: it is not optional and runs on all_success. A
    cleanup (all_done) or alert (one_failed) step is not: its failure, or a one_failed step that
    never triggered (skipped), neither fails the run nor blocks its dependents."""
    return not optional and rule == ALL_SUCCESS


def run_outcome(steps: Iterable[tuple[str, bool]]) -> str | None:
    """The run's final status from (status, not required) of its steps, or None while any can move."""
    items = list(steps)
    if any(s not in ("succeeded", "failed", "cancelled", "skipped") for s, _ in items):
        return None
    if any(s == "failed" and not opt for s, opt in items):
        return "failed"
    if any(s == "cancelled" for s, _ in items):
        return "cancelled"
    if any(s == "skipped" and not opt for s, opt in items):
        return "failed"
    return "succeeded"


def backoff_delay(base: float, attempt: int, cap: float = 300.0) -> float:
    """Delay before attempt `attempt + 1`: base, 2·base, 4·base, … capped."""
    return min(cap, base * (2 ** max(0, attempt - 1)))
