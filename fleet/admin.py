from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from fleet import actions
from fleet.models import Instance, Service


@admin.register(Service)
class ServiceAdmin(GuardedModelAdmin):
    """Edits go through fleet.actions so they are audited and bump the spec version."""

    list_display = ("name", "driver", "desired_instances", "spec_version", "image", "command")
    search_fields = ("name",)
    readonly_fields = ("desired_instances", "spec_version", "last_scaled_at", "failure_streak", "backoff_until")

    def save_model(self, request, obj, form, change):  # type: ignore[override]
        before = {name: form.initial.get(name) for name in form.changed_data} if change else None
        actions.save_service(obj, actor=request.user, created=not change, before=before)

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
