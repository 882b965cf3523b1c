from django.contrib import admin

from core.admin import ReadOnlyAdmin, SettingsInline
from fleet.admin import register_settings_inline
from slo import actions
from slo.models import AlertChannel, AlertDelivery, Incident, Objectives

# Written by the controller and the pages (through the actions, audited); here to look up.

@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ("id", "service", "flow_slug", "run_id", "kind", "severity", "status", "title", "opened_at",
                    "resolved_at")
    list_filter = ("status", "kind", "severity", "service")
    search_fields = ("title",)


@admin.register(AlertChannel)
class AlertChannelAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "shown_target", "service", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    exclude = ("target",)  # read-only here: shown redacted, a webhook URL's path and query are its secret
    readonly_fields = ("shown_target",)


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "incident", "channel", "event", "status", "attempts", "response_status", "sent_at")
    list_filter = ("status", "event", "channel")


class ObjectivesInline(SettingsInline):
    model = Objectives
    update = staticmethod(actions.update_settings)


register_settings_inline(ObjectivesInline)
