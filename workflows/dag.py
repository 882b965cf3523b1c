"""Validation of a flow's steps as a DAG; refusals name the problem."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from workflows.steps import ACTIONS


def validate_definition(steps: Any, tags: Any = None) -> None:
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise ValidationError({"tags": "tags must be a list of strings"})
    if not isinstance(steps, list) or not steps:
        raise ValidationError({"steps": "steps must be a non-empty list"})
    names: set[str] = set()
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ValidationError({"steps": f"step {i} must be an object"})
        name = step.get("name")
        if not isinstance(name, str) or not name:
            raise ValidationError({"steps": f"step {i} needs a name"})
        if name in names:
            raise ValidationError({"steps": f"step name '{name}' is used twice"})
        names.add(name)
        action = step.get("action")
        if action not in ACTIONS:
            raise ValidationError({"steps": f"step '{name}': unknown action '{action}' (known: "
                                            f"{', '.join(sorted(ACTIONS))})"})
        if not isinstance(step.get("params", {}), dict):
            raise ValidationError({"steps": f"step '{name}': params must be an object"})
        for key in ("retries", "timeout"):
            value = step.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValidationError({"steps": f"step '{name}': {key} must be a non-negative integer"})
        deps = step.get("depends_on", [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise ValidationError({"steps": f"step '{name}': depends_on must be a list of step names"})
    for step in steps:
        for dep in step.get("depends_on", []):
            if dep not in names:
                raise ValidationError({"steps": f"step '{step['name']}' depends on unknown step '{dep}'"})
    order = topological_order(steps)
    if order is None:
        raise ValidationError({"steps": "the steps form a cycle"})


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
