"""Step actions: a registry, easy to extend with @action("name", validate=...).

An action gets a StepContext and returns a JSON-able output, or raises StepError. Actions must
be safe to run again (at-least-once delivery): the http action sends an Idempotency-Key of
run/step so the called service can deduplicate; scale sets a desired count (idempotent).

Each action may declare a params validator; load_flows, admin and the API refuse a definition
whose params it rejects, naming the step and the problem. Long actions should watch
`ctx.stop` (set when the run is cancelled or the step timed out) - the engine also interrupts
the worker's main thread, but cooperative actions stop more cleanly.

`python` steps call functions registered with @callable_step("name") (see workflows/callables.py).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from core.numbers import is_finite_number
from core.permissions import can
from fleet import reconcile
from fleet.actions import count_error, scale_service
from fleet.drivers import EngineUnavailable
from fleet.locks import LockTimeout
from fleet.models import Instance, Service

# --- registry ---------------------------------------------------------------------------------


class StepError(Exception):
    """An expected failure of a step (it is retried if attempts remain)."""


class StepInterrupted(StepError):
    """The step was told to stop: it timed out, or its run was cancelled."""


class AwaitApproval(Exception):  # noqa: N818 - a signal to the engine, not an error
    """Raised by the approval action: park the step until a person decides."""

    def __init__(self, prompt: str) -> None:
        super().__init__(prompt)
        self.prompt = prompt


@dataclass
class StepContext:
    run_id: int
    step_name: str
    params: dict[str, Any]
    data: dict[str, Any]
    outputs: dict[str, Any]  # outputs of finished steps, by step name
    timeout: float
    attempt: int
    actor: Any = None  # the user who started the run (scale steps act as them)
    stop: threading.Event = field(default_factory=threading.Event)


Validator = Callable[[dict[str, Any]], None]


@dataclass
class StepAction:
    name: str
    fn: Callable[[StepContext], Any]
    validate: Validator | None = None


ACTIONS: dict[str, StepAction] = {}
CALLABLES: dict[str, Callable[[StepContext], Any]] = {}


def action(name: str, *, validate: Validator | None = None) -> Callable[[Callable[[StepContext], Any]],
                                                                        Callable[[StepContext], Any]]:
    def register(fn: Callable[[StepContext], Any]) -> Callable[[StepContext], Any]:
        ACTIONS[name] = StepAction(name, fn, validate)
        return fn

    return register


def callable_step(name: str) -> Callable[[Callable[[StepContext], Any]], Callable[[StepContext], Any]]:
    def register(fn: Callable[[StepContext], Any]) -> Callable[[StepContext], Any]:
        CALLABLES[name] = fn
        return fn

    return register


def validate_params(action_name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming the problem when `params` do not fit the action."""
    entry = ACTIONS[action_name]
    if entry.validate:
        entry.validate(params)


# --- templating -------------------------------------------------------------------------------
# "$data.a.b" / "$steps.ingest.response.x" as a whole string is replaced by the value itself (any
# JSON type); "${data.user}" inside a longer string is replaced by its text.
REF = re.compile(r"\$\{((?:data|steps)(?:\.[A-Za-z0-9_-]+)+)\}")


def _lookup(path: str, ctx: StepContext) -> Any:
    parts = path.split(".")
    value: Any = ctx.data if parts[0] == "data" else ctx.outputs
    for part in parts[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith("$data.") or value.startswith("$steps."))


def render(value: Any, ctx: StepContext) -> Any:
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    if is_reference(value):
        return _lookup(value[1:], ctx)
    if isinstance(value, str) and "${" in value:
        return REF.sub(lambda m: "" if (v := _lookup(m.group(1), ctx)) is None else str(v), value)
    return value


def _param(ctx: StepContext, key: str, default: Any) -> Any:
    value = render(ctx.params.get(key, default), ctx)
    return default if value is None else value


# --- validators -------------------------------------------------------------------------------


def _allowed_keys(params: dict[str, Any], allowed: set[str]) -> None:
    extra = set(params) - allowed
    if extra:
        raise ValueError(f"unknown params {', '.join(sorted(extra))} (allowed: {', '.join(sorted(allowed))})")


def _number_or_ref(params: dict[str, Any], key: str, *, required: bool, integer: bool = False) -> None:
    if key not in params:
        if required:
            raise ValueError(f"params.{key} is required")
        return
    value = params[key]
    if is_reference(value):
        return
    # is_finite_number: NaN passes "value < 0" (every comparison with it is false), inf is no duration.
    if not is_finite_number(value) or (integer and not isinstance(value, int)) or value < 0:
        kind = "integer" if integer else "number"
        raise ValueError(f"params.{key} must be a non-negative {kind} or a $data./$steps. reference")


def _validate_sleep(params: dict[str, Any]) -> None:
    _allowed_keys(params, {"seconds"})
    _number_or_ref(params, "seconds", required=False)


def _validate_http(params: dict[str, Any]) -> None:
    _allowed_keys(params, {"service", "path", "method", "body"})
    if not isinstance(params.get("service"), str) or not params["service"]:
        raise ValueError("params.service (the managed service to call) is required")
    path = params.get("path", "/work")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("params.path must start with '/'")
    if str(params.get("method", "POST")).upper() not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
        raise ValueError("params.method must be GET, POST, PUT, PATCH or DELETE")
    if not isinstance(params.get("body", {}), dict):
        raise ValueError("params.body must be an object")


def _validate_scale(params: dict[str, Any]) -> None:
    _allowed_keys(params, {"service", "instances", "wait"})
    if not isinstance(params.get("service"), str) or not params["service"]:
        raise ValueError("params.service (the service to scale) is required")
    _number_or_ref(params, "instances", required=True, integer=True)
    if not isinstance(params.get("wait", True), bool):
        raise ValueError("params.wait must be true or false")


def _validate_python(params: dict[str, Any]) -> None:
    _allowed_keys(params, {"callable", "kwargs"})
    name = params.get("callable")
    if name not in CALLABLES:
        raise ValueError(f"params.callable {name!r} is not registered (known: {', '.join(sorted(CALLABLES))})")
    if not isinstance(params.get("kwargs", {}), dict):
        raise ValueError("params.kwargs must be an object")


def _validate_approval(params: dict[str, Any]) -> None:
    _allowed_keys(params, {"prompt"})
    if not isinstance(params.get("prompt", ""), str):
        raise ValueError("params.prompt must be a string")


def _validate_noop(params: dict[str, Any]) -> None:
    _allowed_keys(params, set())


# --- actions ----------------------------------------------------------------------------------


@action("noop", validate=_validate_noop)
def noop(ctx: StepContext) -> dict[str, Any]:
    return {"ok": True}


@action("sleep", validate=_validate_sleep)
def sleep(ctx: StepContext) -> dict[str, Any]:
    seconds = _param(ctx, "seconds", 1)
    if not is_finite_number(seconds) or seconds < 0:
        raise StepError(f"sleep needs a non-negative number of seconds, got {seconds!r}")
    # wait() rather than time.sleep(): a cancel or timeout sets ctx.stop and ends it at once.
    if ctx.stop.wait(float(seconds)):
        raise StepInterrupted("sleep interrupted")
    return {"slept": seconds}


@action("http", validate=_validate_http)
def http(ctx: StepContext) -> dict[str, Any]:
    """Call an endpoint of a managed service on one of its healthy instances."""
    service = ctx.params.get("service")
    path = render(ctx.params.get("path", "/work"), ctx)
    method = str(ctx.params.get("method", "POST")).upper()
    instances = list(
        Instance.objects.filter(service__name=service, state=Instance.State.RUNNING)
        .exclude(health=Instance.Health.DOWN)
        .values_list("host", "port")
    )
    if not instances:
        raise StepError(f"service {service!r} has no healthy running instance")
    host, port = random.choice(instances)
    # Earlier steps' results travel as a summary, not their whole bodies (which would nest).
    inputs = {name: {"status": out.get("status"), "instance": out.get("instance")}
              for name, out in ctx.outputs.items() if isinstance(out, dict)}
    body = {"runId": ctx.run_id, "step": ctx.step_name, "data": ctx.data, "inputs": inputs,
            **(render(ctx.params.get("body") or {}, ctx))}
    url = f"http://{host}:{port}{path}"
    # The fleet's own addresses (written by its drivers, never by a flow's author): not the
    # outbound guard's business, but the request must stay on them. The rendered path cannot move
    # it to another host, and a redirect is not followed: a service answering 3xx to
    # http://169.254.169.254/ must not make the worker fetch it and put the answer in the run.
    parts = urlsplit(url)
    if parts.hostname != host.strip("[]").lower() or parts.port != port:
        raise StepError(f"params.path {path!r} does not stay on the instance {host}:{port}")
    try:
        resp = requests.request(
            method,
            url,
            json=body,
            timeout=ctx.timeout,
            headers={"Idempotency-Key": f"run-{ctx.run_id}/{ctx.step_name}"},
            allow_redirects=False,
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


@action("scale", validate=_validate_scale)
def scale(ctx: StepContext) -> dict[str, Any]:
    """Scale a service as the run's actor: the same action (policies, audit) as POST /mgmt/scale."""
    name = ctx.params["service"]
    instances = _param(ctx, "instances", None)
    if count_error(instances) is not None:
        raise StepError(f"scale needs a non-negative integer instance count, got {instances!r}: "
                        f"{count_error(instances)}")
    svc = Service.objects.filter(name=name).first()
    if svc is None:
        raise StepError(f"no service named {name!r}")
    if ctx.actor is None:
        raise StepError("the run has no actor to scale as")
    # A flow must not lend its runner rights they lack: the same check as POST /mgmt/scale.
    if not can(ctx.actor, "scale", svc):
        raise StepError(f"{ctx.actor.get_username()} may not scale {name}")
    outcome = scale_service(svc, instances, actor=ctx.actor,
                            reason=f"workflow run {ctx.run_id} step {ctx.step_name}")
    if not outcome.decision.allowed:
        raise StepError(f"scale refused by policy: {outcome.decision.detail}")
    st = reconcile.status(svc)
    if ctx.params.get("wait", True):
        # Converge now rather than wait for the controller tick; bounded by the step's timeout.
        while not ctx.stop.is_set():
            try:
                st = reconcile.converge(svc.pk, component="workflow")
            except (EngineUnavailable, LockTimeout):
                st = reconcile.status(svc)
            if st.converged:
                break
            time.sleep(0.2)
        if ctx.stop.is_set():
            raise StepInterrupted("scale interrupted before the service converged")
    return {"service": name, "desired": instances, "running": st.running}


@action("python", validate=_validate_python)
def python(ctx: StepContext) -> Any:
    fn = CALLABLES.get(ctx.params.get("callable", ""))
    if fn is None:
        raise StepError(f"callable {ctx.params.get('callable')!r} is not registered in this worker")
    return fn(ctx)


@action("approval", validate=_validate_approval)
def approval(ctx: StepContext) -> Any:
    raise AwaitApproval(str(_param(ctx, "prompt", "Approve this run?")))

