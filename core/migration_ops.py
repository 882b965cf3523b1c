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
        Permission = apps.get_model("auth", "Permission")
        moving = set(ContentType.objects.filter(app_label=old_label, model__in=names).values_list("model", flat=True))
        # A process of the new code that ran before this migration may have created an empty twin
        # under the new label (ContentType.objects.get_for_model does): drop it, the old row with
        # its permissions and grants is the one that counts.
        twins = ContentType.objects.filter(app_label=new_label, model__in=moving)
        if Permission.objects.filter(content_type__in=twins).exists():
            raise RuntimeError(f"content types {new_label}.{sorted(moving)} exist twice, both with permissions: "
                               "merge them by hand, then migrate again")
        twins.delete()
        ContentType.objects.filter(app_label=old_label, model__in=names).update(app_label=new_label)

    def backward(apps: Any, schema_editor: Any) -> None:
        ContentType = apps.get_model("contenttypes", "ContentType")
        ContentType.objects.filter(app_label=new_label, model__in=names).update(app_label=old_label)

    return migrations.RunPython(forward, backward)


def copy_to_child(parent: tuple[str, str], child: tuple[str, str], fields: list[str]) -> migrations.RunPython:
    """A RunPython copying `fields` of every parent row into a new child row (child primary key =
    parent's), for settings that move from one model to a one-to-one model of another app; and
    back again when migrating backwards."""

    def forward(apps: Any, schema_editor: Any) -> None:
        Parent, Child = apps.get_model(*parent), apps.get_model(*child)
        rows = Parent.objects.values("pk", *fields).iterator(chunk_size=2000)
        Child.objects.bulk_create([Child(pk=row.pop("pk"), **row) for row in rows], batch_size=2000)

    def backward(apps: Any, schema_editor: Any) -> None:
        Parent, Child = apps.get_model(*parent), apps.get_model(*child)
        for row in Child.objects.values("pk", *fields).iterator(chunk_size=2000):
            Parent.objects.filter(pk=row.pop("pk")).update(**row)

    return migrations.RunPython(forward, backward)
