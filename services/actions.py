"""Domain actions of the services app. Pages, the REST API, admin and the controller call these;
nothing else writes Service or Instance state. Each administrative change writes its audit entry
in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.actions import record
from audit.models import AuditEntry
from policies.enforce import Decision, enforce
from services.models import Instance, Service

SPEC_FIELDS = ("driver", "command", "image", "port", "health_path")
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


def scale_service(
    service: Service, instances: int, *, actor: Any, dry_run: bool = False, reason: str = ""
) -> ScaleOutcome:
    """Set the desired instance count (the source of truth); the reconciler converges to it.

    A refusal by policy is audited as denied and committed; the caller turns it into a 4xx.
    """
    with transaction.atomic():
        svc = Service.objects.select_for_update().get(pk=service.pk)
        decision = enforce(
            actor,
            "scale",
            svc,
            lock=not dry_run,
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
            record("scale", actor=actor, target=svc, outcome=AuditEntry.Outcome.DENIED,
                   payload={**payload, "decision": decision.as_dict()})
            return outcome
        svc.desired_instances = instances
        svc.last_scaled_at = timezone.now()
        svc.save(update_fields=["desired_instances", "last_scaled_at"])
        record("scale", actor=actor, target=svc, payload=payload)
    return outcome


def save_service(service: Service, *, actor: Any, created: bool, before: dict[str, Any] | None = None) -> Service:
    """Create or update a service definition (admin). A change of driver or spec bumps
    spec_version, which makes the reconciler roll instances over one at a time."""
    with transaction.atomic():
        diff: dict[str, list[Any]] = {}
        if not created and before is not None:
            for name, old in before.items():
                new = getattr(service, name)
                if old != new:
                    diff[name] = [old, new]
            if any(name in diff for name in SPEC_FIELDS):
                service.spec_version += 1
        service.save()
        record(
            "service.create" if created else "service.update",
            actor=actor,
            target=service,
            payload={"changes": diff} if not created else {"name": service.name, "driver": service.driver},
        )
    return service


def delete_service(service: Service, *, actor: Any) -> None:
    with transaction.atomic():
        record("service.delete", actor=actor, target=service, payload={"name": service.name})
        service.delete()


def record_failover(instance: Instance, *, cause: str, component: str) -> None:
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
                "lived_seconds": round(lived.total_seconds(), 1),
                "failure_streak": svc.failure_streak,
                "backoff_until": svc.backoff_until.isoformat() if svc.backoff_until else None,
            },
        )
