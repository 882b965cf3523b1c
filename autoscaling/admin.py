from django.contrib import admin

from autoscaling import actions
from autoscaling.models import AutoscaleDecision, AutoscaleSettings, ScaleOverride
from core.admin import ReadOnlyAdmin, SettingsInline
from fleet.admin import register_settings_inline

# Written by the controller and the pages (through the actions, audited); here to look up.

@admin.register(AutoscaleDecision)
class AutoscaleDecisionAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "at", "current", "raw", "desired", "applied", "summary")
    list_filter = ("applied", "service")
    show_full_result_count = False  # a row per decision per service: counting them all is slow


@admin.register(ScaleOverride)
class ScaleOverrideAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "owner", "instances", "created_at", "expires_at", "cleared_at")
    list_filter = ("service",)


class AutoscaleSettingsInline(SettingsInline):
    model = AutoscaleSettings
    update = staticmethod(actions.update_settings)


register_settings_inline(AutoscaleSettingsInline)
