"""Admin base classes every app's admin may use."""

from __future__ import annotations

from typing import Any

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records only the console writes (through its apps' actions, audited): viewable in admin,
    never added, changed or deleted there, which would bypass the actions and their audit entries."""

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False


class SettingsInline(admin.StackedInline):
    """An app's per-service settings row, edited on its parent's admin page (the row is created
    with the parent and deleted with it: never added or removed here). The parent's admin saves it
    through the owning app's `update_settings` action (`update`), which validates and audits it."""

    update: Any = None  # the owning app's update_settings(service, changes, *, actor)
    can_delete = False
    extra = 0
    max_num = 1
