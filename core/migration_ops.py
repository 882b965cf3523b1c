"""Operations the apps' migrations share. Kept tiny and stable: migrations import this forever."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import migrations


def move_content_types(old_label: str, new_label: str, models: Iterable[str]) -> migrations.RunPython:
    """A RunPython moving the content types of models that changed app (and with them every
    permission, group grant and django-guardian object grant, which point at them by id). A new
    database has none under the old label, so it does nothing there."""
    names = list(models)

    def forward(apps: Any, schema_editor: Any) -> None:
        ContentType = apps.get_model("contenttypes", "ContentType")
        ContentType.objects.filter(app_label=old_label, model__in=names).update(app_label=new_label)

    def backward(apps: Any, schema_editor: Any) -> None:
        ContentType = apps.get_model("contenttypes", "ContentType")
        ContentType.objects.filter(app_label=new_label, model__in=names).update(app_label=old_label)

    return migrations.RunPython(forward, backward)
