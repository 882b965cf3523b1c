"""Built-in callables for `python` steps. Register your own with @callable_step("name") in a module
that the worker imports (an app's ready() is a good place)."""

from __future__ import annotations

from typing import Any

from workflows.steps import StepContext, StepError, callable_step, render


@callable_step("echo")
def echo(ctx: StepContext) -> dict[str, Any]:
    """Returns its (templated) kwargs: handy to shape data for later steps."""
    return {"kwargs": render(ctx.params.get("kwargs", {}), ctx)}


@callable_step("flaky")
def flaky(ctx: StepContext) -> dict[str, Any]:
    """Fails its first `fail_attempts` attempts, then succeeds: exercises retries and backoff."""
    fail_attempts = int(render(ctx.params.get("kwargs", {}), ctx).get("fail_attempts", 1))
    if ctx.attempt <= fail_attempts:
        raise StepError(f"flaky: attempt {ctx.attempt} of the first {fail_attempts} fails on purpose")
    return {"attempt": ctx.attempt}


@callable_step("fail")
def fail(ctx: StepContext) -> None:
    message = render(ctx.params.get("kwargs", {}), ctx).get("message", "failed on purpose")
    raise StepError(str(message))


@callable_step("count_records")
def count_records(ctx: StepContext) -> dict[str, Any]:
    """Counts the records in data.records (a demo of a computation between http steps)."""
    records = ctx.data.get("records", [])
    if not isinstance(records, list):
        raise StepError("data.records must be a list")
    return {"count": len(records)}


@callable_step("journal")
def journal(ctx: StepContext) -> dict[str, Any]:
    """Works for kwargs.seconds (stoppable), then appends "run step attempt" to the file named by the
    worker's HMS_STEP_JOURNAL (an operator setting, never run data): a visible side effect that
    fault tests count to prove each step completed exactly once."""
    from django.conf import settings

    seconds = float(render(ctx.params.get("kwargs", {}), ctx).get("seconds", 0))
    if ctx.stop.wait(seconds):
        raise StepError("journal interrupted")
    path = settings.HMS_STEP_JOURNAL
    if path:
        with open(path, "a") as fh:
            fh.write(f"{ctx.run_id} {ctx.step_name} {ctx.attempt}\n")
    return {"attempt": ctx.attempt}
