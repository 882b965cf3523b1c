"""Domain actions of the fleet: scaling, service edits and fail-over. Pages, the REST API, admin,
the controller and the other apps call these; nothing else writes Service or Instance state. Each
administrative change writes its audit entry in the same transaction.

Apps above fleet react to a scale without fleet knowing them: `on_scale(hook)` registers a
function called inside the scale's transaction (autoscaling turns a manual scale into an
override row that way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit import events
from audit.actions import record
from audit.models import AuditEntry
from core.errors import ApiError
from core.permissions import can
from fleet.drivers import get_driver
from fleet.envvars import changed_names
from fleet.locks import LockTimeout, service_lock
from fleet.models import Instance, Service
from fleet.nodes import drain_preview
from policies.enforce import Decision, enforce
from policies.models import Policy

SPEC_FIELDS = ("driver", "command", "image", "port", "health_path", "env")
# Fields that are code execution on the console's host (the process command; the environment,
# which can make any program run something else: LD_PRELOAD, PYTHONSTARTUP, PATH). Setting them
# needs fleet.change_command_service, which no standing group has: administrators only.
COMMAND_FIELDS = ("command", "env")
log = logging.getLogger("hmsmgmt.fleet")
EARLY_DEATH = timedelta(seconds=10)  # an instance dying younger than this counts toward a crash loop
MAX_BACKOFF_SECONDS = 60


@dataclass
class ScaleOutcome:
    service: Service
    previous: int
    requested: int
    decision: Decision
    dry_run: bool = False

    @property
    def applied(self) -> bool:
        return self.decision.allowed and not self.dry_run


# Called as hook(service, previous=, instances=, actor=, reason=) inside the transaction of every applied
# scale, after its audit entry: what a hook writes commits or rolls back with the scale.
ScaleHook = Callable[..., None]
_scale_hooks: list[ScaleHook] = []


def on_scale(hook: ScaleHook) -> None:
    """Register a hook (an app's ready() does, once per process)."""
    if hook not in _scale_hooks:
        _scale_hooks.append(hook)


class _RowMoved(Exception):
    """The service row no longer holds the state a scale decision was made on."""


def count_error(instances: Any) -> str | None:
    """Why a requested instance count is unacceptable whatever the policies say, or None. The
    one ceiling every entry point shares (the API's schema uses the same setting)."""
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 0:
        return "Instances must be a whole number, 0 or more."
    if instances > settings.HMS_MAX_INSTANCES:
        return f"Instances must be at most {settings.HMS_MAX_INSTANCES} (HMS_MAX_INSTANCES)."
    return None


def scale_service(
    service: Service, instances: int, *, actor: Any, dry_run: bool = False, reason: str = ""
) -> ScaleOutcome:
    """Set the desired instance count (the source of truth); the reconciler converges to it.

    A refusal by policy is audited as denied and committed; the caller turns it into a 4xx.
    Callers check count_error() first; a count outside it is a programming error here.

    Optimistic first: the caller has just read `service` (the API and the pages fetch it through
    the permission choke point), so the policies judge that state and the UPDATE applies only if
    the row still holds it: one statement instead of a locked re-read plus an update on the hot
    path. If someone scaled in between (or the decision is a refusal, which deserves the freshest
    state before it is recorded) it decides again on the row read under FOR UPDATE.
    """
    if (problem := count_error(instances)) is not None:
        raise ValueError(problem)
    svc = service
    for locked in (False, True):
        try:
            with transaction.atomic():
                if locked:
                    svc = Service.objects.select_for_update().get(pk=service.pk)
                decision = enforce(
                    actor,
                    "scale",
                    svc,
                    lock=not dry_run,
                    service_id=svc.pk,
                    service=svc.name,
                    current=svc.desired_instances,
                    requested=instances,
                    last_scaled_at=svc.last_scaled_at,
                )
                outcome = ScaleOutcome(svc, svc.desired_instances, instances, decision, dry_run)
                if dry_run:
                    return outcome
                payload: dict[str, Any] = {"from": svc.desired_instances, "to": instances}
                if reason:
                    payload["reason"] = reason
                if not decision.allowed:
                    if not locked:
                        raise _RowMoved  # judge a refusal again on the freshest state before recording it
                    record(events.SCALE, actor=actor, target=svc, outcome=AuditEntry.Outcome.DENIED,
                           payload={**payload, "decision": decision.as_dict()})
                    return outcome
                now = timezone.now()
                # The row must still hold what the decision and the entry ("from") rest on: the
                # count, and the last scaling time only when a cooldown was judged (otherwise
                # concurrent re-asserts of one count would all fall back to the locked pass).
                unchanged = Service.objects.filter(pk=svc.pk, name=svc.name, desired_instances=svc.desired_instances)
                if Policy.Kind.SCALING_RATE in decision.checked_kinds:
                    unchanged = unchanged.filter(last_scaled_at=svc.last_scaled_at)
                if not unchanged.update(desired_instances=instances, last_scaled_at=now):
                    raise _RowMoved
                # The entry after the UPDATE, under the row lock it took: entries of one service are
                # then numbered in the order their changes commit, so each "from" is the "to" of
                # the entry before it. (Written first, a re-assert that committed earlier could be
                # sealed after a change that committed later.)
                record(events.SCALE, actor=actor, target=svc, payload=payload)
                previous = svc.desired_instances
                svc.desired_instances, svc.last_scaled_at = instances, now
                for hook in _scale_hooks:
                    hook(svc, previous=previous, instances=instances, actor=actor, reason=reason)
                return outcome
        except _RowMoved:
            continue
    raise AssertionError("unreachable: the locked pass always decides")  # pragma: no cover


def may_set_command(actor: Any, service: Service) -> bool:
    """May actor set the service's command or environment? Users need change_command_service;
    system actors (the demo, tests' set-up, management commands) are the operator's own code."""
    if isinstance(actor, str):
        return actor.startswith("system:")
    return can(actor, "change_command", service)


def save_service(service: Service, *, actor: Any, created: bool, before: dict[str, Any] | None = None) -> Service:
    """Create or update a service definition (admin). A change of driver or spec bumps
    spec_version, which makes the reconciler roll instances over one at a time.

    The command and the environment (COMMAND_FIELDS) are set only by an actor who may
    (may_set_command): PermissionDenied otherwise, with nothing saved. The audit entry names the
    environment variables added, removed or changed, never their values."""
    diff: dict[str, list[Any]] = {}
    if not created and before is not None:
        for name, old in before.items():
            new = getattr(service, name)
            if old != new:
                diff[name] = [old, new]
    touched = [f for f in COMMAND_FIELDS if f in diff] if not created else \
        [f for f in COMMAND_FIELDS if getattr(service, f)]
    if touched and not may_set_command(actor, service):
        raise PermissionDenied(f"Setting a service's {' and '.join(touched)} needs the permission "
                               f"fleet.change_command_service (it runs code on the console's host).")
    with transaction.atomic():
        if created:
            service.save()
        elif diff:
            # Write only what changed: a stale object must not reset desired_instances (which
            # only scale_service writes) or anything else it did not mean to touch.
            service.save(update_fields=list(diff))
            if any(name in diff for name in SPEC_FIELDS):
                Service.objects.filter(pk=service.pk).update(spec_version=F("spec_version") + 1)
                service.spec_version = Service.objects.values_list("spec_version", flat=True).get(pk=service.pk)
        changes = {k: v for k, v in diff.items() if k != "env"}
        if "env" in diff:
            changes["env"] = changed_names(diff["env"][0] or {}, diff["env"][1] or {})  # names only
        created_payload = {"name": service.name, "driver": service.driver}
        if created and service.env:
            created_payload["env"] = sorted(service.env)
        record(
            events.SERVICE_CREATE if created else events.SERVICE_UPDATE,
            actor=actor,
            target=service,
            payload={"changes": changes} if not created else created_payload,
        )
    return service


def delete_service(service: Service, *, actor: Any) -> None:
    """Delete the definition and, once that commits, what it runs on its engines: an operator who
    deletes a service expects its processes, containers or Swarm service gone, not orphaned.

    Engine removal is best effort: an unreachable engine is logged, and what is left carries the
    console's labels (`docker ps --filter label=hmsmgmt.service=NAME` finds it). It runs under the
    service's converge lock, so a converge in flight cannot start an instance after the removal."""
    drivers = {service.driver} | set(
        service.instances.filter(state__in=Instance.LIVE_STATES).values_list("driver", flat=True)
    )
    spec = service.spec()
    with transaction.atomic():
        # Its bounds and rate policies go with it (they refer to it): the entry names them.
        policies = sorted(Policy.objects.filter(service=service).values_list("name", flat=True))
        payload: dict[str, Any] = {"name": service.name, "engines": sorted(drivers)}
        if policies:
            payload["policies_removed"] = policies
        record(events.SERVICE_DELETE, actor=actor, target=service, payload=payload)
        service.delete()
        transaction.on_commit(lambda: remove_engine_objects(spec, drivers))


def remove_engine_objects(spec: Any, drivers: set[str]) -> list[str]:
    """Stop everything a (deleted) service runs on the given drivers; returns the drivers that
    could not be reached."""
    failed = []
    try:
        with service_lock(spec.service_id, timeout=settings.HMS_SCALE_WAIT_SECONDS):
            for name in sorted(drivers):
                try:
                    get_driver(name).remove_service(spec)
                except Exception as exc:  # best effort: an engine error must not undo the delete
                    log.warning("could not remove %s's %s instances: %s", spec.name, name, exc)
                    failed.append(name)
    except LockTimeout:
        log.warning("could not remove %s's instances: a converge still holds the service", spec.name)
        failed = sorted(drivers)
    return failed


def record_failover(instance: Instance, *, cause: str, component: str, node: str = "") -> None:
    """An instance died without being asked to: mark it exited, count toward crash-loop backoff,
    and audit the fail-over (the reconciler starts the replacement)."""
    now = timezone.now()
    with transaction.atomic():
        inst = Instance.objects.select_for_update().get(pk=instance.pk)
        if inst.state not in Instance.LIVE_STATES:
            return  # someone else already handled it
        inst.state = Instance.State.EXITED
        inst.health = Instance.Health.DOWN
        inst.exit_reason = cause[:300]
        inst.stopped_at = now
        inst.save(update_fields=["state", "health", "exit_reason", "stopped_at"])
        svc = Service.objects.select_for_update().get(pk=inst.service_id)
        lived = now - (inst.started_at or inst.created_at)
        if lived < EARLY_DEATH:
            svc.failure_streak += 1
            if svc.failure_streak >= 2:
                delay = min(2 ** (svc.failure_streak - 1), MAX_BACKOFF_SECONDS)
                svc.backoff_until = now + timedelta(seconds=delay)
        else:
            svc.failure_streak = 0
            svc.backoff_until = None
        svc.save(update_fields=["failure_streak", "backoff_until"])
        record(
            "failover",
            actor=f"system:{component}",
            target=svc,
            payload={
                "instance": inst.pk,
                "ref": inst.ref,
                "cause": cause,
                **({"node": node} if node else {}),
                "lived_seconds": round(lived.total_seconds(), 1),
                "failure_streak": svc.failure_streak,
                "backoff_until": svc.backoff_until.isoformat() if svc.backoff_until else None,
            },
        )


def fail_over_unhealthy(instance: Instance, *, evidence: dict[str, Any], component: str = "monitor") -> bool:
    """An instance failed its probe threshold: mark it exited, audit `failover` with the probe
    evidence, then stop it through its driver. (health.actions decides whether it should: not
    during maintenance.) The reconciler sees live < desired and starts a
    replacement. Safe to call twice: the second call finds it no longer live and does nothing."""
    now = timezone.now()
    with transaction.atomic():
        inst = Instance.objects.select_for_update().get(pk=instance.pk)
        if inst.state not in Instance.LIVE_STATES:
            return False  # already handled (by another batch or by the reconciler)
        svc = Service.objects.get(pk=inst.service_id)
        cause = f"health probe failed {evidence.get('consecutive_failures', '?')} times in a row"
        inst.state = Instance.State.EXITED
        inst.health = Instance.Health.DOWN
        inst.exit_reason = cause[:300]
        inst.stopped_at = now
        inst.save(update_fields=["state", "health", "exit_reason", "stopped_at"])
        record(
            "failover",
            actor=f"system:{component}",
            target=svc,
            payload={"instance": inst.pk, "ref": inst.ref, "cause": cause, "evidence": evidence,
                     "lived_seconds": round((now - (inst.started_at or inst.created_at)).total_seconds(), 1)},
        )
    # Outside the transaction: an engine call may be slow, and the row already says "exited".
    if inst.ref:
        try:
            get_driver(inst.driver).stop_instance(svc.spec(), inst.ref, grace_seconds=1.0)
        except Exception:  # the reconciler stops leftovers as orphans on its next tick
            pass
    return True


# --- Swarm nodes (fleet.nodes) ----------------------------------------------------------------------
def set_node_availability(node: Any, availability: str, *, actor: Any) -> Any:
    """Drain or activate a Swarm node (permission fleet.manage_nodes, checked by the caller through
    core.permissions). The drain preflight decides first: a drain with no room elsewhere, or one
    a last-node guard forbids, is refused and changes nothing. The engine call happens inside
    the transaction so a refused call leaves no audit entry; the row follows on the next sync."""
    preview = drain_preview(node) if availability == "drain" else None
    if preview is not None and (preview.blocked or (preview.moves and not preview.room)):
        raise ApiError(409, "drain_refused", preview.detail)
    with transaction.atomic():
        get_driver("swarm").set_availability(node.node_id, availability)
        before = node.availability
        type(node).objects.filter(pk=node.pk).update(availability=availability)
        record(events.NODE_DRAIN if availability == "drain" else events.NODE_ACTIVATE, actor=actor, target=node,
               payload={"node": node.hostname, "before": before, "after": availability,
                        **({"moves": preview.moves} if preview else {})})
    node.availability = availability
    return preview


def rebalance(service: Service, *, surge: int, counts: dict[str, int]) -> None:
    """One rebalance step of a Swarm service (fleet.nodes.Rebalancer decides): surge=1 asks Swarm
    for one replica more, to land on the emptiest node; surge=0 goes back to desired, which makes
    Swarm remove a task from the fullest node. Audited, naming the spread it acted on."""
    with transaction.atomic():
        updated = Service.objects.filter(pk=service.pk).exclude(surge=surge).update(surge=surge)
        if not updated:
            return
        record(events.SERVICE_REBALANCE, actor="system:rebalance", target=service,
               payload={"step": "surge" if surge else "settle", "replicas": service.desired_instances + surge,
                        "spread": counts})
