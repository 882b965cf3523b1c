"""One settings row per parent row, created with the parent: how an app keeps its own settings of
another app's model (health's probe settings of a fleet Service) without that app knowing."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models.signals import post_save


def create_with(parent: type[models.Model], child: type[models.Model], field: str) -> None:
    """Whenever a `parent` row is created, create its `child` row (`child.<field>` → parent) with
    the child's defaults. Bulk inserts send no signal: create the children there yourself."""

    def receiver(sender: Any, instance: models.Model, created: bool, raw: bool = False, **kwargs: Any) -> None:
        if created and not raw:  # raw: loaddata brings the child rows itself
            child._default_manager.create(**{field: instance})  # a new parent has no child yet

    post_save.connect(receiver, sender=parent, weak=False, dispatch_uid=f"{child._meta.label}.create_with")


def apply_fields(model: type[models.Model], pk: Any, changes: dict[str, Any]) -> dict[str, list[Any]]:
    """Set `changes` on the row (locked), validated like admin (a ValidationError changes nothing),
    and return what changed as {field: [before, after]}. Only inside the caller's transaction: the
    caller writes the audit entry for the change in it."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("apply_fields() must run inside the caller's transaction")
    row = model._default_manager.select_for_update().get(pk=pk)
    diff = {k: [getattr(row, k), v] for k, v in changes.items() if getattr(row, k) != v}
    for name, value in changes.items():
        setattr(row, name, value)
    row.full_clean(exclude=[f.name for f in model._meta.fields if f.primary_key])
    row.save()
    return diff
