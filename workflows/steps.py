"""Step actions: a registry, easy to extend with @action("name").

An action gets a StepContext and returns a JSON-able output, or raises StepError. Actions must
be safe to run again (at-least-once delivery): the http action sends an Idempotency-Key of
run/step so the called service can deduplicate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACTIONS: dict[str, Callable[[StepContext], Any]] = {}


class StepError(Exception):
    pass


@dataclass
class StepContext:
    run_id: int
    step_name: str
    params: dict[str, Any]
    data: dict[str, Any]
    outputs: dict[str, Any]  # outputs of finished steps, by step name
    timeout: float
    attempt: int


def action(name: str) -> Callable[[Callable[[StepContext], Any]], Callable[[StepContext], Any]]:
    def register(fn: Callable[[StepContext], Any]) -> Callable[[StepContext], Any]:
        ACTIONS[name] = fn
        return fn

    return register


def _param_or_data(ctx: StepContext, key: str, default: Any) -> Any:
    """A param may name a data key as "$data.key"; plain values are used as they are."""
    value = ctx.params.get(key, default)
    if isinstance(value, str) and value.startswith("$data."):
        value = ctx.data.get(value[6:], default)
    return value


@action("noop")
def noop(ctx: StepContext) -> dict[str, Any]:
    return {"ok": True}


@action("sleep")
def sleep(ctx: StepContext) -> dict[str, Any]:
    seconds = _param_or_data(ctx, "seconds", 1)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise StepError(f"sleep needs a non-negative number of seconds, got {seconds!r}")
    seconds = min(float(seconds), ctx.timeout)
    time.sleep(seconds)
    return {"slept": seconds}


@action("http")
def http(ctx: StepContext) -> dict[str, Any]:
    """Call an endpoint of a managed service on one of its healthy instances."""
    import requests

    from services.models import Instance

    service = ctx.params.get("service")
    path = ctx.params.get("path", "/work")
    method = str(ctx.params.get("method", "POST")).upper()
    instances = list(
        Instance.objects.filter(service__name=service, state=Instance.State.RUNNING).values_list("host", "port")
    )
    if not instances:
        raise StepError(f"service {service!r} has no running instance")
    host, port = random.choice(instances)
    # Earlier steps' results travel as a summary, not their whole bodies (which would nest).
    inputs = {name: {"status": out.get("status"), "instance": out.get("instance")}
              for name, out in ctx.outputs.items() if isinstance(out, dict)}
    body = {"runId": ctx.run_id, "step": ctx.step_name, "data": ctx.data, "inputs": inputs,
            **(ctx.params.get("body") or {})}
    try:
        resp = requests.request(
            method,
            f"http://{host}:{port}{path}",
            json=body,
            timeout=ctx.timeout,
            headers={"Idempotency-Key": f"run-{ctx.run_id}/{ctx.step_name}"},
        )
    except requests.RequestException as exc:
        raise StepError(f"{service} {host}:{port}{path}: {exc.__class__.__name__}: {exc}") from exc
    if resp.status_code >= 400:
        raise StepError(f"{service} answered {resp.status_code}: {resp.text[:200]}")
    try:
        payload = resp.json()
    except ValueError:
        payload = {"text": resp.text[:1000]}
    return {"status": resp.status_code, "instance": f"{host}:{port}", "response": payload}
