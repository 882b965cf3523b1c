from typing import Any

from django.contrib import admin

from core.admin import GrantingGuardedModelAdmin, ReadOnlyAdmin
from fleet import actions
from fleet.models import EngineState, Instance, Service


@admin.register(Service)
class ServiceAdmin(GrantingGuardedModelAdmin):
    """Edits go through fleet.actions so they are audited and bump the spec version. The apps that
    keep settings per service add their inline here (register_settings_inline), saved through
    their own actions."""

    inlines: list[Any] = []

    list_display = ("name", "driver", "desired_instances", "spec_version", "image", "command")
    search_fields = ("name",)
    readonly_fields = ("desired_instances", "spec_version", "last_scaled_at", "failure_streak", "backoff_until")

    def save_model(self, request, obj, form, change):  # type: ignore[override]
        before = {name: form.initial.get(name) for name in form.changed_data} if change else None
        actions.save_service(obj, actor=request.user, created=not change, before=before)

    def save_formset(self, request, form, formset, change):  # type: ignore[override]
        inline = next(i for i in self.inlines if i.model is formset.model)
        # What formset.save() would have noted, for admin's change message.
        formset.new_objects, formset.deleted_objects = [], []
        formset.changed_objects = [(sub.instance, sub.changed_data) for sub in formset.forms if sub.changed_data]
        for sub in formset.forms:
            changes = {name: sub.cleaned_data[name] for name in sub.changed_data if name in sub.cleaned_data}
            if changes:  # the row exists: it was created with the service
                inline.update(form.instance, changes, actor=request.user)

    def delete_model(self, request, obj):  # type: ignore[override]
        actions.delete_service(obj, actor=request.user)

    def delete_queryset(self, request, queryset):  # type: ignore[override]
        for obj in queryset:
            actions.delete_service(obj, actor=request.user)


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    """Observed state: read-only here; scale the service instead."""

    list_display = ("id", "service", "driver", "ref", "host", "port", "state", "health", "restarts", "started_at")
    list_filter = ("state", "driver", "service")

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False


def register_settings_inline(inline: Any) -> None:
    """An app above fleet shows its per-service settings on the service's admin page."""
    if inline not in ServiceAdmin.inlines:
        ServiceAdmin.inlines = [*ServiceAdmin.inlines, inline]


@admin.register(EngineState)
class EngineStateAdmin(ReadOnlyAdmin):
    list_display = ("engine", "state", "failures", "last_error", "changed_at")
