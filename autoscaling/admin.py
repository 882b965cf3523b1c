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
    """Without `scale` on the service, what would scale it is read-only here (the action refuses it
    too, actions.check_scaling_right): the bounds while the autoscaler is on, the switch while off."""

    model = AutoscaleSettings
    update = staticmethod(actions.update_settings)

    def get_readonly_fields(self, request, obj=None):  # type: ignore[override]
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is None or obj.pk is None or actions.may_scale(request.user, obj):
            return fields
        current = AutoscaleSettings.objects.filter(pk=obj.pk).first()
        if current is None:
            return fields
        return (*fields, *(actions.BOUNDS if current.autoscale_enabled else ("autoscale_enabled",)))


register_settings_inline(AutoscaleSettingsInline)
