from django.contrib import admin

from autoscaling.models import AutoscaleDecision, ScaleOverride
from core.admin import ReadOnlyAdmin

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
