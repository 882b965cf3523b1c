from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from audit.admin import ReadOnlyAdmin
from services import actions
from services.models import (
    AlertChannel,
    AlertDelivery,
    AutoscaleDecision,
    Incident,
    Instance,
    MaintenanceWindow,
    ProbeResult,
    ProbeRollup,
    ScaleOverride,
    Service,
)


@admin.register(Service)
class ServiceAdmin(GuardedModelAdmin):
    """Edits go through services.actions so they are audited and bump the spec version."""

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


# SLA, alerting and autoscaling records: written by the controller and the SLA pages (through
# services.actions, audited); here to look up, filter and search.
@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "kind", "severity", "status", "title", "opened_at", "resolved_at")
    list_filter = ("status", "kind", "severity", "service")
    search_fields = ("title",)


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "starts_at", "ends_at", "reason", "created_by")
    list_filter = ("service",)


@admin.register(AlertChannel)
class AlertChannelAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "target", "service", "enabled", "created_at")
    list_filter = ("kind", "enabled")


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "incident", "channel", "event", "status", "attempts", "response_status", "sent_at")
    list_filter = ("status", "event", "channel")


@admin.register(AutoscaleDecision)
class AutoscaleDecisionAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "at", "current", "raw", "desired", "applied", "summary")
    list_filter = ("applied", "service")
    show_full_result_count = False  # a row per decision per service: counting them all is slow


@admin.register(ScaleOverride)
class ScaleOverrideAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "owner", "instances", "created_at", "expires_at", "cleared_at")
    list_filter = ("service",)


@admin.register(ProbeResult)
class ProbeResultAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "instance", "at", "ok", "latency_ms", "status_code", "error")
    list_filter = ("ok", "in_maintenance", "service")
    show_full_result_count = False  # raw probes: many rows


@admin.register(ProbeRollup)
class ProbeRollupAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "minute", "total", "up", "down", "slow", "excluded")
    list_filter = ("service",)
    show_full_result_count = False
