"""Policy editing in Django admin: pick a kind first, then a form with only that kind's fields.

Saves and deletes go through policies.actions (validated, audited with a before→after diff);
enforce() reads the table on every request, so an edit decides the next request.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from policies import actions
from policies.models import Policy

KIND_HELP: dict[str, str] = {
    Policy.Kind.CONCURRENT_RUNS: "Refuse a new run (429) while this many runs in scope are pending or running — "
    "scope it to one flow id or to every flow with a tag, per user or in total. With “when full: queue” a "
    "start beyond the limit waits instead (202, FIFO per scope) and starts by itself when a slot frees.",
    Policy.Kind.INSTANCE_BOUNDS: "Refuse (422) a scale request outside [minimum, maximum] instances for a service "
    "(blank service = every service).",
    Policy.Kind.SCALING_RATE: "Refuse a change larger than the step (422), or one made sooner than the cooldown "
    "after the previous change (409).",
    Policy.Kind.CHANGE_FREEZE: "Refuse scaling and/or runs (409) between start and end (UTC); members of the "
    "exempt group may still act.",
    Policy.Kind.LAST_NODE_GUARD: "Refuse (409) draining a Swarm node that runs every replica of a service "
    "(every service; nothing to fill in).",
}


def summary(policy: Policy) -> str:
    """The rule in one line, as the changelist shows it."""
    k = policy.kind
    if k == Policy.Kind.CONCURRENT_RUNS:
        scope = f"tag '{policy.scope_tag}'" if policy.scope_tag else f"flow {policy.scope_flow}"
        queue = "; queues when full" if policy.when_full == Policy.WhenFull.QUEUE else ""
        return f"≤ {policy.limit} active runs of {scope} {'per user' if policy.per_user else 'in total'}{queue}"
    svc = policy.service.name if policy.service_id else "every service"
    if k == Policy.Kind.INSTANCE_BOUNDS:
        return f"{svc}: {policy.min_instances if policy.min_instances is not None else 0}" \
               f"–{policy.max_instances if policy.max_instances is not None else '∞'} instances"
    if k == Policy.Kind.SCALING_RATE:
        parts = []
        if policy.max_step:
            parts.append(f"step ≤ {policy.max_step}")
        if policy.cooldown_seconds:
            parts.append(f"cooldown {policy.cooldown_seconds} s")
        return f"{svc}: {', '.join(parts)}"
    if k == Policy.Kind.CHANGE_FREEZE and policy.freeze_start and policy.freeze_end:
        exempt = f", {policy.exempt_group} exempt" if policy.exempt_group_id else ""
        return (f"{policy.get_applies_to_display()} frozen {policy.freeze_start:%Y-%m-%d %H:%M}"
                f" → {policy.freeze_end:%Y-%m-%d %H:%M} UTC{exempt}")
    return ""


class PolicyForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = list(Policy.TRACKED_FIELDS)  # narrowed per kind by PolicyAdmin.get_fieldsets
        widgets = {"kind": forms.HiddenInput}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "when_full" in self.fields:
            # A form (or a script posting one) that leaves it out keeps today's rule: refuse.
            self.fields["when_full"].required = False

    def clean_when_full(self) -> str:
        return self.cleaned_data.get("when_full") or Policy.WhenFull.REFUSE


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyForm
    list_display = ("name", "kind", "rule", "enabled", "updated_at")
    list_filter = ("kind", "enabled")
    list_select_related = ("service", "exempt_group")  # the rule column names them
    search_fields = ("name", "description", "scope_flow", "scope_tag", "service__name")
    choose_kind_template = "policies/admin_choose_kind.html"

    @admin.display(description="rule")
    def rule(self, obj: Policy) -> str:
        return summary(obj)

    # --- a form per kind -------------------------------------------------------------------------
    def _kind(self, request: HttpRequest, obj: Policy | None) -> str | None:
        if obj is not None and obj.pk:
            return obj.kind
        kind = request.POST.get("kind") or request.GET.get("kind")
        return kind if kind in Policy.Kind.values else None

    def get_fieldsets(self, request: HttpRequest, obj: Policy | None = None) -> Any:
        kind = self._kind(request, obj)
        first = "kind_label" if obj is not None and obj.pk else "kind"
        common = (None, {"fields": (first, "name", "enabled", "description")})
        if kind is None:
            return [common]
        return [common, (Policy.Kind(kind).label, {"fields": Policy.KIND_FIELDS[kind],
                                                   "description": KIND_HELP[kind]})]

    def get_readonly_fields(self, request: HttpRequest, obj: Policy | None = None) -> Any:
        # A policy keeps its kind; make a new one for another kind (the fields mean different things).
        return ("kind_label",) if obj is not None and obj.pk else ()

    @admin.display(description="kind")
    def kind_label(self, obj: Policy) -> str:
        return obj.get_kind_display()

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if self._kind(request, None) is None:
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Add policy: choose its kind",
                "kinds": [(value, label, KIND_HELP[value]) for value, label in Policy.Kind.choices],
            }
            return TemplateResponse(request, self.choose_kind_template, context)
        return super().add_view(request, form_url, extra_context)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        initial["kind"] = self._kind(request, None)
        return initial

    # --- every write goes through the audited actions --------------------------------------------
    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        actions.save_policy(obj, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        actions.delete_policy(obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            actions.delete_policy(obj, actor=request.user)
