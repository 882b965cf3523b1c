from django.contrib import admin

from core.admin import GrantingGuardedModelAdmin
from workflows import actions
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun


@admin.register(WorkflowDefinition)
class WorkflowDefinitionAdmin(GrantingGuardedModelAdmin):
    """Edits are validated by the model's clean() (the same DAG checks as load_flows): a cycle, an
    unknown action, a missing dependency or bad params is shown on the form and nothing is saved."""

    list_display = ("slug", "name", "tags", "deadline", "enabled", "updated_at")
    search_fields = ("slug", "name")

    def save_model(self, request, obj, form, change):  # type: ignore[override]
        changes = {name: [form.initial.get(name), form.cleaned_data.get(name)] for name in form.changed_data}
        actions.save_flow(obj, actor=request.user, created=not change, changes=changes if change else None)


class StepRunInline(admin.TabularInline):
    model = StepRun
    extra = 0
    can_delete = False
    readonly_fields = ("name", "action", "optional", "status", "attempts", "max_attempts", "redeliveries",
                       "worker", "not_before", "started_at", "finished_at", "error", "output")
    fields = readonly_fields


@admin.register(WorkflowRun)
class WorkflowRunAdmin(GrantingGuardedModelAdmin):
    """Runs are created and changed only by the engine; read-only here."""

    list_display = ("id", "flow_slug", "actor", "status", "created_at", "finished_at", "deadline_at")
    list_filter = ("status", "flow_slug")
    inlines = [StepRunInline]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False
