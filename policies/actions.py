"""Domain actions of the policies app: save and delete a policy, each audited with what changed.

Django admin calls these (PolicyAdmin.save_model / delete_model); enforce() reads the table on
every request, so a saved edit decides the very next request.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit import events
from audit.actions import record
from policies.models import Policy


def save_policy(policy: Policy, *, actor: Any) -> Policy:
    """Validate, clear the fields the kind does not use, save, and audit the before→after diff."""
    created = policy.pk is None
    policy.clear_unused_fields()
    policy.full_clean()
    with transaction.atomic():
        before: dict[str, Any] = {}
        if not created:
            # Re-read under a row lock: the diff is against what is stored, not what the form saw.
            stored = Policy.objects.select_for_update().filter(pk=policy.pk).first()
            before = stored.snapshot() if stored is not None else {}
        policy.save()
        after = policy.snapshot()
        if created:
            payload: dict[str, Any] = {"name": policy.name, "kind": policy.kind, "after": after}
        else:
            changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
            payload = {"name": policy.name, "kind": policy.kind, "changes": changes}
        record(events.POLICY_CREATE if created else events.POLICY_UPDATE, actor=actor, target=policy, payload=payload)
    return policy


def delete_policy(policy: Policy, *, actor: Any) -> None:
    with transaction.atomic():
        record(events.POLICY_DELETE, actor=actor, target=policy, payload={"name": policy.name, "kind": policy.kind,
                                                                     "before": policy.snapshot()})
        policy.delete()
