from django.contrib import admin

from core.admin import ReadOnlyAdmin, SettingsInline
from fleet.admin import register_settings_inline
from health import actions
from health.models import MaintenanceWindow, ProbeResult, ProbeRollup, ProbeSettings

# Written by the controller and the pages (through the actions, audited); here to look up.

@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "starts_at", "ends_at", "reason", "created_by")
    list_filter = ("service",)


@admin.register(ProbeResult)
class ProbeResultAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "instance", "at", "ok", "latency_ms", "status_code", "error")
    list_filter = ("ok", "in_maintenance", "service")
    show_full_result_count = False  # raw probes: many rows


@admin.register(ProbeRollup)
class ProbeRollupAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "span", "start", "total", "up", "down", "slow", "excluded")
    list_filter = ("span", "service")
    show_full_result_count = False


class ProbeSettingsInline(SettingsInline):
    model = ProbeSettings
    update = staticmethod(actions.update_settings)


register_settings_inline(ProbeSettingsInline)
