"""Queued runs: a start beyond a "when full: queue" quota waits in line (FIFO per queue: one per
quota and scope, policies.enforce.queue_key) and starts by itself once a slot frees.

Who moves the queue:
- the transition that frees a slot (a run finishing, a run cancelled): after its commit,
  `slot_freed` starts the heads of the queues that run could have been holding up — in the
  worker or request that ended it, so the next run starts within milliseconds;
- the controller, every second (`promote_all`, a tick job): the safety net for a process that
  died between the commit and the promotion, for a quota raised in admin, and for a run that
  waits on a second queueing quota. One indexed query when nothing waits.

A head is started by workflows.transitions.start_queued, under the quota locks a start takes, so
"exactly the limit running" holds whoever promotes at the same moment.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from policies.models import Policy
from workflows import dispatch, selectors, transitions
from workflows.models import WorkflowRun

log = logging.getLogger(__name__)
Q = WorkflowRun.Status.QUEUED
SHOWN_AHEAD = 5  # runs named in "behind alice's runs 41, 42"; the rest are counted


def queued_runs(*, key: str, before_id: int | None) -> int:
    """The policies' "queued_runs" provider: runs waiting in this queue (ahead of `before_id`)."""
    qs = WorkflowRun.objects.filter(queue_key=key, status=Q)
    if before_id is not None:
        qs = qs.filter(pk__lt=before_id)
    return qs.count()


def promote(key: str, *, limit: int = 1000) -> list[int]:
    """Start the heads of one queue while its quotas allow; returns the runs started."""
    started: list[int] = []
    lost = 0
    while len(started) < limit and lost < 50:
        head = WorkflowRun.objects.filter(queue_key=key, status=Q).order_by("pk").values_list("pk", flat=True).first()
        if head is None:
            break
        outcome = transitions.start_queued(head)
        if outcome is False:
            break  # no room yet: the next slot that frees (or the next sweep) tries again
        if outcome is None:
            lost += 1  # another process started or cancelled it first: look at the new head
            continue
        started.append(head)
        dispatch.dispatch_ready(head)
    return started


def slot_freed(run: WorkflowRun) -> list[int]:
    """After a run gave back its slot: promote the queues it may have been holding up (its owner's
    per-user queues and every shared one). One query when nothing is queued."""
    keys = set(WorkflowRun.objects.filter(status=Q).values_list("queue_key", flat=True).distinct())
    if not keys:
        return []
    mine = {k for k in keys if k.endswith(":*") or (run.actor_id is not None and k.endswith(f":{run.actor_id}"))}
    started: list[int] = []
    for key in sorted(mine):
        try:
            started += promote(key)
        except Exception:  # the controller's sweep tries again within a second
            log.exception("promoting queue %s after run %s freed its slot failed", key, run.pk)
    return started


def promote_all() -> list[int]:
    """The controller's safety net (every second): every queue with someone waiting."""
    keys = sorted(set(WorkflowRun.objects.filter(status=Q).values_list("queue_key", flat=True).distinct()))
    started: list[int] = []
    for key in keys:
        started += promote(key)
    return started


# --- what the pages and the API say about a queued run ------------------------------------------
@dataclass
class Place:
    position: int  # 1 = next to start
    ahead: list[tuple[int, str]]  # (run id, owner) of the runs ahead, nearest last
    policy: str
    limit: int | None
    running: int

    @property
    def words(self) -> str:
        """"3rd in line behind alice's runs 41, 42 (analytics jobs per user ≤ 5: 5 running)"."""
        text = f"{ordinal(self.position)} in line"
        if self.ahead:
            shown = self.ahead[-SHOWN_AHEAD:]
            groups: dict[str, list[int]] = defaultdict(list)
            for run_id, owner in shown:
                groups[owner].append(run_id)
            parts = [f"{owner}'s run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
                     for owner, ids in groups.items()]
            more = len(self.ahead) - len(shown)
            text += " behind " + " and ".join(parts) + (f" (and {more} more ahead)" if more else "")
        return f"{text} ({self.policy}: {self.running} running)"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def places(runs: list[WorkflowRun]) -> dict[int, Place]:
    """The place in line of each queued run among `runs` (others are left out): per queue, one
    query for the runs waiting in it, one for its policy and one for its active count."""
    by_key: dict[str, list[WorkflowRun]] = defaultdict(list)
    for r in runs:
        if r.status == Q and r.queue_key:
            by_key[r.queue_key].append(r)
    out: dict[int, Place] = {}
    for key, mine in by_key.items():
        last = max(r.pk for r in mine)
        line = list(WorkflowRun.objects.filter(queue_key=key, status=Q, pk__lte=last).order_by("pk")
                    .values_list("pk", "actor__username"))
        policy_id, _, scope = key.partition(":")
        policy = Policy.objects.filter(pk=int(policy_id) if policy_id.isdigit() else 0).first()
        user_id = int(scope) if scope.isdigit() else None
        running = selectors.active_runs(user_id=user_id, flow=(policy.scope_flow or None) if policy else None,
                                        tag=(policy.scope_tag or None) if policy else None) if policy else 0
        index = {pk: i for i, (pk, _) in enumerate(line)}
        for r in mine:
            i = index.get(r.pk)
            if i is None:
                continue
            out[r.pk] = Place(position=i + 1, ahead=[(pk, owner or "—") for pk, owner in line[:i]],
                              policy=policy.name if policy else "a deleted quota",
                              limit=policy.limit if policy else None, running=running)
    return out


def place(run: WorkflowRun) -> Place | None:
    return places([run]).get(run.pk)


def queue_summary(run: WorkflowRun) -> dict[str, Any]:
    """The API's view of a run's place in line (null fields for a run that is not queued)."""
    p = place(run) if run.status == Q else None
    return {"position": p.position if p else None, "queue": p.words if p else None}
