"""One settings row per parent row, created with the parent: how an app keeps its own settings of
another app's model (health's probe settings of a fleet Service) without that app knowing."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_save


def create_with(parent: type[models.Model], child: type[models.Model], field: str) -> None:
    """Whenever a `parent` row is created, create its `child` row (`child.<field>` → parent) with
    the child's defaults. Bulk inserts send no signal: create the children there yourself."""

    def receiver(sender: Any, instance: models.Model, created: bool, raw: bool = False, **kwargs: Any) -> None:
        if created and not raw:  # raw: loaddata brings the child rows itself
            child._default_manager.get_or_create(**{field: instance})

    post_save.connect(receiver, sender=parent, weak=False, dispatch_uid=f"{child._meta.label}.create_with")
