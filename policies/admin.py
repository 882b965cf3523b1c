from django.contrib import admin

from policies.models import Policy


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "enabled", "limit", "scope_tag", "scope_flow", "service_name", "updated_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "description")
    fieldsets = (
        (None, {"fields": ("name", "kind", "enabled", "description")}),
        ("Concurrent runs", {"fields": ("scope_flow", "scope_tag", "per_user", "limit")}),
        ("Instance bounds / scaling rate", {"fields": ("service_name", "min_instances", "max_instances",
                                                       "max_step", "cooldown_seconds")}),
        ("Change freeze", {"fields": ("freeze_start", "freeze_end", "applies_to", "exempt_group")}),
    )
