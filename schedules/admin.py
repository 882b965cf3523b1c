from django.contrib import admin

from schedules import actions
from schedules.cadence import Invalid
from schedules.models import Schedule, ScheduleFire


class ScheduleFireInline(admin.TabularInline):
    model = ScheduleFire
    extra = 0
    can_delete = False
    readonly_fields = ("scheduled_for", "fired_at", "outcome", "reason", "run")
    fields = readonly_fields
    ordering = ("-scheduled_for",)

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def, override]
        return False


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Saves go through schedules.actions (validated, audited, next fire recomputed); fire records
    are read-only, below."""

    list_display = ("id", "flow", "name", "spec", "timezone", "owner", "enabled", "next_fire_at", "last_outcome")
    list_filter = ("enabled", "missed_policy", "overlap_policy")
    search_fields = ("flow__slug", "name", "owner__username")
    readonly_fields = ("next_fire_at", "last_fire_at", "last_outcome", "last_reason", "last_run", "created_at",
                       "updated_at")
    inlines = [ScheduleFireInline]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def, override]
        fields = {k: form.cleaned_data[k] for k in actions.EDITABLE if k in form.cleaned_data}
        fields["interval_seconds"] = fields.get("interval_seconds") or None
        try:
            if change:
                actions.update_schedule(obj, fields, actor=request.user, owner=form.cleaned_data["owner"])
            else:
                saved = actions.create_schedule(form.cleaned_data["flow"], fields, owner=form.cleaned_data["owner"],
                                                actor=request.user)
                obj.pk = saved.pk
        except Invalid as exc:
            from django.contrib import messages

            messages.error(request, f"{exc.field}: {exc.detail}")

    def delete_model(self, request, obj):  # type: ignore[no-untyped-def, override]
        actions.delete_schedule(obj, actor=request.user)


@admin.register(ScheduleFire)
class ScheduleFireAdmin(admin.ModelAdmin):
    """What became of each scheduled instant: recorded by the controller, read-only."""

    list_display = ("schedule", "scheduled_for", "fired_at", "outcome", "run", "reason")
    list_filter = ("outcome",)

    def has_add_permission(self, request):  # type: ignore[no-untyped-def, override]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def, override]
        return False
