"""enforce(): the one answer to "may ACTOR do ACTION on TARGET now?".

Policies know nothing of services or workflows (imports point down): callers pass what the rules
need in `context`, and counts that live higher up come from providers registered at start-up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from policies.models import Policy

# name -> callable; e.g. "active_runs"(user_id|None, flow_slug|None, tag|None) -> int,
# "queued_runs"(key, before_id|None) -> int (runs waiting in a queueing quota's queue)
_providers: dict[str, Callable[..., int]] = {}


def register_provider(name: str, fn: Callable[..., int]) -> None:
    _providers[name] = fn


@dataclass
class Decision:
    allowed: bool = True
    policy: str | None = None
    kind: str | None = None
    detail: str = ""
    limit: int | None = None
    current: int | None = None
    status: int = 200
    reasons: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    checked_kinds: set[str] = field(default_factory=set)
    denied_by: list[str] = field(default_factory=list)
    # A refusal every denying policy of which says "when full: queue": the caller may queue the
    # run instead (see `queueable`). `queue` describes the first such policy: its name, the queue's
    # key (policy and scope), limit, active count and how many already wait.
    queue: dict[str, Any] | None = None
    hard_refusal: bool = False

    @property
    def queueable(self) -> bool:
        return not self.allowed and self.queue is not None and not self.hard_refusal

    def check(self, policy: Policy) -> None:
        self.checked.append(policy.name)
        self.checked_kinds.add(policy.kind)

    def deny(self, policy: Policy, status: int, detail: str, limit: int | None, current: int | None,
             queue: dict[str, Any] | None = None) -> None:
        # The first refusal decides the status; policies are visited in a fixed order (freeze,
        # quota, bounds, rate) so the same situation always gets the same answer.
        if self.allowed:
            self.allowed = False
            self.policy, self.kind, self.status = policy.name, policy.kind, status
            self.detail, self.limit, self.current = detail, limit, current
        if queue is None:
            self.hard_refusal = True
        elif self.queue is None:
            self.queue = queue
        self.reasons.append(detail)
        if policy.name not in self.denied_by:
            self.denied_by.append(policy.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "policy": self.policy,
            "kind": self.kind,
            "detail": self.detail,
            "limit": self.limit,
            "current": self.current,
            "reasons": self.reasons,
            "checked": self.checked,
            "policies": self.denied_by,
            **({"queueable": True} if self.queueable else {}),
        }


def queue_key(policy: Policy, user_id: int | None) -> str:
    """The queue a run waits in: one per queueing quota and scope (per user, or everyone's)."""
    return f"{policy.pk}:{user_id if policy.per_user else '*'}"


def _quota_lock(user_id: int | None, policy: Policy) -> None:
    """Serialize quota checks per (user, scope) until the surrounding transaction ends.

    On SQLite the IMMEDIATE transaction already holds the database write lock.
    """
    if connection.vendor != "postgresql":
        return
    key = f"quota:{policy.pk}:{user_id if policy.per_user else '*'}"
    lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])


def _user_id(actor: Any) -> int | None:
    """A signed-in user's id; None for system actors ("system:controller") and anonymous."""
    if isinstance(actor, str) or not getattr(actor, "is_authenticated", False):
        return None
    return actor.pk


def _in_group(actor: Any, group_id: int | None) -> bool:
    if not group_id or _user_id(actor) is None:
        return False  # system actors belong to no group: a freeze holds them too
    return actor.groups.filter(pk=group_id).exists()


def enforce(actor: Any, action: str, target: Any, *, lock: bool = False, quota_for: Any = None,
            **context: Any) -> Decision:
    """Decide. `action` is "scale" or "run".

    `actor` is who acts now: their group decides a freeze exemption. `quota_for` (default: the
    actor) is whose runs a per-user quota counts: a retry acts as the retrier but the run still
    belongs to, and counts against, its starter.

    scale context: service_id (Service.pk: what a policy's service refers to), service (its name,
    for the reasons), current (desired now), requested, last_scaled_at (datetime|None)
    run context: flow (slug), tags (list of str); queued_run (id) when a queued run asks to start:
    a queueing quota then counts only the runs queued ahead of it (FIFO), else every queued run
    With lock=True (inside the acting transaction), quota checks take their lock first, so the
    count and the following insert are atomic against concurrent requests.
    """
    if lock and not connection.in_atomic_block:
        # A transaction-scoped lock taken outside a transaction is released at once: the count and
        # the caller's insert would not be atomic. Fail loudly rather than allow a race.
        raise RuntimeError("enforce(lock=True) must run inside the transaction that acts on the decision")
    decision = Decision()
    now = timezone.now()
    # Read on every call (no cache): an edit in admin decides the very next request.
    # Only the kinds that can judge this action: on the hot path most policies are of the other.
    kinds = [Policy.Kind.CHANGE_FREEZE] + (
        [Policy.Kind.INSTANCE_BOUNDS, Policy.Kind.SCALING_RATE] if action == "scale" else [Policy.Kind.CONCURRENT_RUNS]
    )
    policies = list(Policy.objects.filter(enabled=True, kind__in=kinds).order_by("kind", "name"))
    for policy in policies:
        if policy.kind == Policy.Kind.CHANGE_FREEZE:
            _check_freeze(decision, policy, actor, action, now)
        elif action == "scale" and policy.kind in (Policy.Kind.INSTANCE_BOUNDS, Policy.Kind.SCALING_RATE):
            if policy.service_id is not None and policy.service_id != context.get("service_id"):
                continue
            if policy.kind == Policy.Kind.INSTANCE_BOUNDS:
                _check_bounds(decision, policy, context)
            else:
                _check_rate(decision, policy, context, now)
        elif action == "run" and policy.kind == Policy.Kind.CONCURRENT_RUNS:
            flow, tags = context.get("flow"), context.get("tags") or []
            if (policy.scope_flow and policy.scope_flow == flow) or (policy.scope_tag and policy.scope_tag in tags):
                owner = actor if quota_for is None else quota_for
                _check_quota(decision, policy, owner, lock, context.get("queued_run"))
    return decision


def check_drain(last_node_of: list[str]) -> list[str]:
    """The services (of `last_node_of`, those whose every replica runs on the node to drain) that
    an enabled last-node guard keeps that node from being drained for."""
    if Policy.objects.filter(enabled=True, kind=Policy.Kind.LAST_NODE_GUARD).exists():
        return sorted(last_node_of)
    return []


def _check_freeze(decision: Decision, policy: Policy, actor: Any, action: str, now: datetime) -> None:
    applies = policy.applies_to == Policy.Applies.BOTH or (
        (policy.applies_to == Policy.Applies.SCALE) == (action == "scale")
    )
    if not applies or not (policy.freeze_start and policy.freeze_end):
        return
    decision.check(policy)
    if policy.freeze_start <= now < policy.freeze_end and not _in_group(actor, policy.exempt_group_id):
        decision.deny(
            policy,
            409,
            f"Change freeze '{policy.name}' is in force until {policy.freeze_end:%Y-%m-%d %H:%M} UTC.",
            None,
            None,
        )


def _check_bounds(decision: Decision, policy: Policy, context: dict[str, Any]) -> None:
    decision.check(policy)
    requested, service = context["requested"], context.get("service")
    if policy.max_instances is not None and requested > policy.max_instances:
        decision.deny(
            policy,
            422,
            f"{service} may run at most {policy.max_instances} instances; {requested} requested.",
            policy.max_instances,
            requested,
        )
    elif policy.min_instances is not None and requested < policy.min_instances:
        decision.deny(
            policy,
            422,
            f"{service} must keep at least {policy.min_instances} instances; {requested} requested.",
            policy.min_instances,
            requested,
        )


def _check_rate(decision: Decision, policy: Policy, context: dict[str, Any], now: datetime) -> None:
    decision.check(policy)
    current, requested, service = context["current"], context["requested"], context.get("service")
    step = abs(requested - current)
    if policy.max_step is not None and step > policy.max_step:
        decision.deny(
            policy,
            422,
            f"{service} may change by at most {policy.max_step} instances per request; "
            f"{current} → {requested} is {step}.",
            policy.max_step,
            step,
        )
    last = context.get("last_scaled_at")
    if policy.cooldown_seconds and last is not None and step > 0:
        elapsed = max(0, int((now - last).total_seconds()))  # a clock step back is not "negative"
        if elapsed < policy.cooldown_seconds:
            decision.deny(
                policy,
                409,
                f"{service} was scaled {elapsed} s ago; the cooldown is {policy.cooldown_seconds} s.",
                policy.cooldown_seconds,
                elapsed,
            )


def _check_quota(decision: Decision, policy: Policy, actor: Any, lock: bool, queued_run: int | None) -> None:
    if not policy.limit:
        return  # not a valid quota (admin refuses this; a raw insert could still make one)
    uid = _user_id(actor)
    if policy.per_user and uid is None:
        return  # a per-user quota has no user to count for system actors; totals still apply
    decision.check(policy)
    user_id = uid if policy.per_user else None
    if lock:
        _quota_lock(user_id, policy)
    counter = _providers.get("active_runs")
    if counter is None:
        raise RuntimeError("no 'active_runs' provider registered (workflows app not loaded?)")
    current = counter(user_id=user_id, flow=policy.scope_flow or None, tag=policy.scope_tag or None)
    scope = policy.scope_tag or policy.scope_flow
    who = f" for {actor.get_username()}" if policy.per_user else " in total"
    if policy.when_full == Policy.WhenFull.QUEUE:
        _check_queue(decision, policy, user_id, current, queued_run, f"{scope} runs already active{who}")
        return
    if current >= policy.limit:
        decision.deny(
            policy,
            429,
            f"{current} of {policy.limit} {scope} runs already active{who}.",
            policy.limit,
            current,
        )


def _check_queue(decision: Decision, policy: Policy, user_id: int | None, current: int, queued_run: int | None,
                 what: str) -> None:
    """A queueing quota: a start waits when the scope is full or others already wait (a slot that
    frees goes to the head of the queue, never to a newcomer). The one query more than a refusing
    quota is made only here, so flows without a queueing quota pay nothing for queues."""
    assert policy.limit is not None
    queued = _providers.get("queued_runs")
    if queued is None:
        raise RuntimeError("no 'queued_runs' provider registered (workflows app not loaded?)")
    key = queue_key(policy, user_id)
    waiting = queued(key=key, before_id=queued_run)  # ahead of this run, or all of them for a newcomer
    if current < policy.limit and waiting == 0:
        return
    bound = int(settings.HMS_RUN_QUEUE_MAX)
    if queued_run is None and waiting >= bound:
        decision.deny(policy, 429, f"{current} of {policy.limit} {what}, and its queue is full "
                      f"({waiting} waiting; HMS_RUN_QUEUE_MAX={bound}).", policy.limit, current)
        return
    decision.deny(policy, 429, f"{current} of {policy.limit} {what}; {waiting} queued ahead.", policy.limit, current,
                  queue={"policy": policy.name, "policyId": policy.pk, "key": key, "limit": policy.limit,
                         "current": current, "ahead": waiting, "perUser": policy.per_user})
