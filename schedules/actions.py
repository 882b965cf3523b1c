"""Domain actions of the schedules app: create, edit, pause, resume and delete a schedule, and fire
it (the controller's job calls fire() and release_held()). Each change is atomic and writes its audit
entry in its transaction; a fire's claim, its run's start and both audit entries commit together.

Who may manage a flow's schedules (docs/schedules.md): whoever may run the flow creates schedules
owned by themselves (an administrator may name another owner, who must be able to run the flow);
a schedule is edited, paused, resumed and deleted by its owner, an administrator, or a user granted
schedules.change_schedule / schedules.delete_schedule. The runs act as the owner: at every fire the
owner must still be active and allowed to run the flow, and the start goes through the same
policies (quotas, freezes) as the owner's own start would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import events
from audit.actions import record
from audit.models import AuditEntry
from core import safejson
from core.permissions import can
from schedules.cadence import MAX_BOUND, Cadence, Invalid, plan_fires
from schedules.models import Schedule, ScheduleFire
from workflows import actions as workflow_actions
from workflows.deadlines import compute_deadline, validate_deadline
from workflows.models import WorkflowDefinition, WorkflowRun

ACTOR = "system:scheduler"
MAX_DATA_BYTES = 64 * 1024
EDITABLE = ("name", "cron", "interval_seconds", "timezone", "data", "enabled", "missed_policy", "missed_bound",
            "overlap_policy", "deadline")
CADENCE_FIELDS = {"cron", "interval_seconds", "timezone"}


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check the editable fields (types, ranges, names); raises Invalid naming the first bad one."""
    out = dict(fields)
    unknown = set(out) - set(EDITABLE)
    if unknown:
        name = sorted(unknown)[0]
        raise Invalid(name, f"Unknown field '{name[:60]}'; a schedule has {', '.join(EDITABLE)}.")
    for key in ("name", "cron", "timezone", "missed_policy", "overlap_policy"):
        if key in out and not isinstance(out[key], str):
            raise Invalid(key, f"{key} must be a string.")
    if "name" in out and len(out["name"]) > 100:
        raise Invalid("name", "The name is at most 100 characters.")
    if "cron" in out:
        out["cron"] = " ".join(out["cron"].split())
    if "enabled" in out and not isinstance(out["enabled"], bool):
        raise Invalid("enabled", "enabled must be true or false.")
    if "missed_policy" in out and out["missed_policy"] not in Schedule.Missed.values:
        raise Invalid("missed_policy", f"Unknown missed-fires policy '{out['missed_policy'][:30]}'; "
                                       "choose skip, once or each.")
    if "overlap_policy" in out and out["overlap_policy"] not in Schedule.Overlap.values:
        raise Invalid("overlap_policy", f"Unknown overlap policy '{out['overlap_policy'][:30]}'; "
                                        "choose skip, queue or allow.")
    if "missed_bound" in out:
        b = out["missed_bound"]
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BOUND:
            raise Invalid("missed_bound", f"missed_bound must be a whole number from 1 to {MAX_BOUND}.")
    for key, kinds, what in (("data", (dict,), "a JSON object"), ("deadline", (dict, type(None)), "an object or null")):
        if key in out:
            if not isinstance(out[key], kinds):
                raise Invalid(key, f"{key} must be {what}.")
            if (why := safejson.problem(out[key])) is not None:
                raise Invalid(key, f"{key}: {why}.")
            if len(json.dumps(out[key])) > MAX_DATA_BYTES:
                raise Invalid(key, f"{key} is larger than {MAX_DATA_BYTES // 1024} KiB.")
    if "deadline" in out and not out["deadline"]:
        out["deadline"] = None  # {} says no deadline, as null does
    if "deadline" in out and out["deadline"] is not None:
        try:  # the same two forms as a flow's deadline: {within_seconds: N} or {by: "HH:MM", tz: ...}
            validate_deadline(out["deadline"])
        except ValueError as exc:
            raise Invalid("deadline", str(exc)) from None
    return out


def check_owner(flow: WorkflowDefinition, owner: Any, *, actor: Any, trusted: bool = False) -> None:
    """The owner is the actor, unless an administrator (or `trusted`: load_flows, run by whoever
    holds the server's shell) names someone else; either way the owner must be able to run the
    flow now (their runs act with their permissions)."""
    if not trusted and owner.pk != getattr(actor, "pk", None) and not getattr(actor, "is_superuser", False):
        raise Invalid("owner", "Only an administrator may create or hand over a schedule owned by someone else.")
    if not owner.is_active or not can(owner, "run", flow):
        raise Invalid("owner", f"{owner.get_username()} may not run flow '{flow.slug}', so cannot own its schedule.")


def _cadence(s: Schedule) -> Cadence:
    return Cadence(cron=s.cron, interval=s.interval_seconds, tz=s.timezone)


def validate(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields checked as create_schedule would (the cadence included), saving nothing."""
    clean = _clean(fields)
    Cadence(cron=clean.get("cron", ""), interval=clean.get("interval_seconds"), tz=clean.get("timezone", "UTC"))
    return clean


def create_schedule(flow: WorkflowDefinition, fields: Mapping[str, Any], *, owner: Any, actor: Any,
                    trusted: bool = False) -> Schedule:
    clean = _clean(fields)
    s = Schedule(flow=flow, owner=owner, **clean)
    cadence = _cadence(s)  # raises Invalid naming cron / interval / timezone
    check_owner(flow, owner, actor=actor, trusted=trusted)
    with transaction.atomic():
        s.next_fire_at = cadence.after(timezone.now()) if s.enabled else None
        s.save()
        record(events.SCHEDULE_CREATE, actor=actor, target=s, payload=_describe(s))
    return s


def update_schedule(s: Schedule, fields: Mapping[str, Any], *, actor: Any, owner: Any = None,
                    trusted: bool = False) -> Schedule:
    clean = _clean(fields)
    with transaction.atomic():
        s = Schedule.objects.select_for_update().select_related("flow", "owner").get(pk=s.pk)
        changes = {k: [getattr(s, k), v] for k, v in clean.items() if getattr(s, k) != v}
        for key, value in clean.items():
            setattr(s, key, value)
        if "cron" in clean and clean["cron"] and "interval_seconds" not in clean:
            s.interval_seconds = None  # a cron given replaces the interval (and the other way round)
        if clean.get("interval_seconds") is not None and "cron" not in clean:
            s.cron = ""
        cadence = _cadence(s)
        if owner is not None and owner.pk != s.owner_id:
            check_owner(s.flow, owner, actor=actor, trusted=trusted)
            changes["owner"] = [s.owner.get_username(), owner.get_username()]
            s.owner = owner
        if not changes:
            return s
        if CADENCE_FIELDS & set(changes) or "enabled" in changes:
            s.next_fire_at = cadence.after(timezone.now()) if s.enabled else None
        if "enabled" in changes and not s.enabled:
            _drop_held(s, "the schedule was paused")
        s.save()
        record(events.SCHEDULE_UPDATE, actor=actor, target=s,
               payload={"scheduleId": s.pk, "flowId": s.flow.slug, "changes": changes})
    return s


def set_enabled(s: Schedule, enabled: bool, *, actor: Any) -> bool:
    """Pause (no fire until resumed; a held fire is dropped) or resume (the next instant from now:
    what fell due while paused is not a missed fire). False when it already was so."""
    with transaction.atomic():
        s = Schedule.objects.select_for_update().select_related("flow").get(pk=s.pk)
        if s.enabled == enabled:
            return False
        nxt = _cadence(s).after(timezone.now()) if enabled else None
        Schedule.objects.filter(pk=s.pk).update(enabled=enabled, next_fire_at=nxt, updated_at=timezone.now())
        if not enabled:
            _drop_held(s, "the schedule was paused")
        record(events.SCHEDULE_RESUME if enabled else events.SCHEDULE_PAUSE, actor=actor, target=s,
               payload={"scheduleId": s.pk, "flowId": s.flow.slug, "nextFireAt": nxt})
    return True


def delete_schedule(s: Schedule, *, actor: Any) -> None:
    with transaction.atomic():
        record(events.SCHEDULE_DELETE, actor=actor, target=s, payload=_describe(s))
        s.delete()


def _describe(s: Schedule) -> dict[str, Any]:
    return {"scheduleId": s.pk, "flowId": s.flow.slug, "owner": s.owner.get_username(), "cron": s.cron,
            "intervalSeconds": s.interval_seconds, "timezone": s.timezone, "enabled": s.enabled,
            "missedPolicy": s.missed_policy, "missedBound": s.missed_bound, "overlapPolicy": s.overlap_policy,
            "deadline": s.deadline}


def _drop_held(s: Schedule, reason: str) -> None:
    ScheduleFire.objects.filter(schedule=s, outcome=ScheduleFire.Outcome.HELD).update(
        outcome=ScheduleFire.Outcome.SKIPPED, reason=reason)


# --- firing ------------------------------------------------------------------------------------------
@dataclass
class FireResult:
    claimed: bool
    fires: list[ScheduleFire]


def active_run_id(s: Schedule) -> int | None:
    """A run this schedule started that is not finished: queued behind a quota, pending, running
    or paused (the overlap policies' test: a queued run is no reason to queue another)."""
    return (ScheduleFire.objects.filter(schedule=s, run__status__in=WorkflowRun.UNFINISHED)
            .values_list("run_id", flat=True).first())


def fire(s: Schedule, due: datetime, *, now: datetime, grace: timedelta) -> FireResult:
    """Claim the instants due at `now` (the conditional update: one claimer wins, a second
    controller or a replayed pass finds next_fire_at moved and does nothing) and fire them, all in
    one transaction: a crash before the commit leaves the instants unclaimed and unfired."""
    plan = plan_fires(_cadence(s), due, now, s.missed_policy, s.missed_bound, grace)
    with transaction.atomic():
        won = Schedule.objects.filter(pk=s.pk, enabled=True, next_fire_at=due).update(next_fire_at=plan.next_at)
        if not won:
            return FireResult(False, [])
        s.next_fire_at = plan.next_at
        done: list[ScheduleFire] = []
        if plan.skipped:
            count = f"{plan.skipped}+" if plan.capped else str(plan.skipped)
            reason = f"{count} missed fire(s) dropped (missed-fires policy {s.missed_policy})"
            assert plan.latest_skipped is not None
            done.append(ScheduleFire.objects.create(schedule=s, scheduled_for=plan.latest_skipped, fired_at=now,
                                                    outcome=ScheduleFire.Outcome.MISSED, reason=reason))
            record(events.SCHEDULE_MISSED, actor=ACTOR, target=s,
                   payload={"scheduleId": s.pk, "flowId": s.flow.slug, "missed": plan.skipped,
                            "atLeast": plan.capped, "latest": plan.latest_skipped, "policy": s.missed_policy})
        for instant in plan.fire:
            done.append(_fire_one(s, instant))
    return FireResult(True, done)


def _fire_one(s: Schedule, instant: datetime) -> ScheduleFire:
    if s.overlap_policy != Schedule.Overlap.ALLOW and (busy := active_run_id(s)) is not None:
        now = timezone.now()
        held = ScheduleFire.objects.filter(schedule=s, outcome=ScheduleFire.Outcome.HELD).first()
        if s.overlap_policy == Schedule.Overlap.QUEUE and held is None:
            f = ScheduleFire.objects.create(schedule=s, scheduled_for=instant, fired_at=now,
                                            outcome=ScheduleFire.Outcome.HELD, reason=f"waits for run {busy}")
            record(events.SCHEDULE_HOLD, actor=ACTOR, target=s, payload=_fire_payload(s, f) | {"behindRunId": busy})
            return _remember(s, f)
        why = (f"run {busy} still active; a fire already waits for it" if held is not None
               else f"run {busy} still active (overlap policy skip)")
        f = ScheduleFire.objects.create(schedule=s, scheduled_for=instant, fired_at=now,
                                        outcome=ScheduleFire.Outcome.SKIPPED, reason=why)
        record(events.SCHEDULE_SKIP, actor=ACTOR, target=s, payload=_fire_payload(s, f) | {"activeRunId": busy})
        return _remember(s, f)
    return _start(s, ScheduleFire(schedule=s, scheduled_for=instant))


def release_held(f: ScheduleFire) -> ScheduleFire | None:
    """Start a held fire once the run it waited for has finished (queue overlap policy); None
    while that run is still active, or when another pass took it first."""
    s = f.schedule
    if not s.enabled or active_run_id(s) is not None:
        return None
    with transaction.atomic():
        # The claim of a held fire: the same conditional update as a due instant's.
        if not ScheduleFire.objects.filter(pk=f.pk, outcome=ScheduleFire.Outcome.HELD).update(
                outcome=ScheduleFire.Outcome.STARTED):
            return None
        return _start(s, f)


def _start(s: Schedule, f: ScheduleFire) -> ScheduleFire:
    """Start the run as the owner would: the owner active and allowed to run the flow, then the
    owner's start through workflows.actions.start_run (its policies, its quota lock, its audit)."""
    owner, flow = s.owner, s.flow
    f.fired_at = timezone.now()
    reason = ""
    run = None
    if not owner.is_active:
        reason = f"owner {owner.get_username()} is disabled"
    elif not flow.enabled:
        reason = f"flow '{flow.slug}' is disabled"
    elif not can(owner, "run", flow):
        reason = f"owner {owner.get_username()} may no longer run flow '{flow.slug}'"
    else:
        outcome = workflow_actions.start_run(flow, dict(s.data), actor=owner)
        if outcome.run is not None:  # started, or queued behind a "when full: queue" quota
            run = outcome.run
            if outcome.queued:
                reason = f"queued, {outcome.position} in line: {outcome.decision.detail}"
            if s.deadline:
                # The schedule's deadline replaces the flow's for the runs it starts, counted from
                # the run's submission as the flow's is; in the fire's transaction, so the
                # controller's deadline monitor never sees the run without it.
                run.deadline_at = compute_deadline(s.deadline, run.created_at)
                WorkflowRun.objects.filter(pk=run.pk).update(deadline_at=run.deadline_at)
        else:
            reason = outcome.decision.detail
    f.run = run
    f.outcome = ScheduleFire.Outcome.STARTED if run is not None else ScheduleFire.Outcome.DENIED
    f.reason = reason[:500]
    f.save()
    record(events.SCHEDULE_FIRE, actor=ACTOR, target=s, payload=_fire_payload(s, f),
           outcome=AuditEntry.Outcome.SUCCESS if run is not None else AuditEntry.Outcome.DENIED)
    return _remember(s, f)


def _fire_payload(s: Schedule, f: ScheduleFire) -> dict[str, Any]:
    return {"scheduleId": s.pk, "flowId": s.flow.slug, "runId": f.run_id, "owner": s.owner.get_username(),
            "scheduledFor": f.scheduled_for, "outcome": f.outcome, "reason": f.reason}


def _remember(s: Schedule, f: ScheduleFire) -> ScheduleFire:
    """The schedule shows its last fire: when, what became of it, why, which run."""
    Schedule.objects.filter(pk=s.pk).update(last_fire_at=f.scheduled_for, last_outcome=f.outcome,
                                            last_reason=f.reason, last_run=f.run)
    return f
