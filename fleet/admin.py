from typing import Any

from django import forms
from django.contrib import admin

from core.admin import GrantingGuardedModelAdmin, ReadOnlyAdmin
from fleet import actions
from fleet.envvars import MASK, env_errors, masked, unmask
from fleet.models import EngineState, Instance, Service, SwarmNode


class ServiceForm(forms.ModelForm):
    """The environment is shown with every value masked (values may be secrets: a page never
    shows them back). A value submitted as the mask keeps what is stored; a new value replaces it;
    a name left out is removed."""

    class Meta:
        model = Service
        fields = ("name", "description", "driver", "command", "image", "port", "health_path", "env")
        help_texts = {"env": f'{{"NAME": "value"}}; stored values show as "{MASK}": leave them so to keep them.'}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored_env: dict[str, str] = dict(self.instance.env or {}) if self.instance.pk else {}
        if "env" in self.fields:
            self.initial["env"] = masked(self.stored_env)

    def clean_env(self) -> dict[str, Any]:
        value = self.cleaned_data.get("env")
        value = {} if value in (None, "") else value
        if not isinstance(value, dict):
            raise forms.ValidationError(env_errors(value))
        value = unmask(value, self.stored_env)
        if problems := env_errors(value):
            raise forms.ValidationError(problems)
        return value


@admin.register(Service)
class ServiceAdmin(GrantingGuardedModelAdmin):
    """Edits go through fleet.actions so they are audited and bump the spec version. The apps that
    keep settings per service add their inline here (register_settings_inline), saved through
    their own actions. The command and environment are read-only to anyone without
    fleet.change_command_service (actions.save_service refuses them too)."""

    form = ServiceForm
    inlines: list[Any] = []

    list_display = ("name", "driver", "desired_instances", "spec_version", "image", "command")
    search_fields = ("name",)
    readonly_fields = ("desired_instances", "spec_version", "last_scaled_at", "failure_streak", "backoff_until")

    def get_readonly_fields(self, request, obj=None):  # type: ignore[override]
        fields = tuple(super().get_readonly_fields(request, obj))
        if actions.may_set_command(request.user, obj or Service()):
            return fields
        return (*fields, "command", "env_names")

    def get_exclude(self, request, obj=None):  # type: ignore[override]
        # Without the right, the environment is not a form field at all (its names are shown).
        if actions.may_set_command(request.user, obj or Service()):
            return super().get_exclude(request, obj)
        return (*(super().get_exclude(request, obj) or ()), "env")

    @admin.display(description="environment")
    def env_names(self, obj: Service) -> str:
        return ", ".join(sorted(obj.env or {})) or "—"

    def save_model(self, request, obj, form, change):  # type: ignore[override]
        before = {name: form.initial.get(name) for name in form.changed_data} if change else None
        if before is not None and "env" in before:
            before["env"] = form.stored_env  # the initial shown was masked
        actions.save_service(obj, actor=request.user, created=not change, before=before)

    def save_formset(self, request, form, formset, change):  # type: ignore[override]
        inline = next(i for i in self.inlines if i.model is formset.model)
        # What formset.save() would have noted, for admin's change message.
        formset.new_objects, formset.deleted_objects = [], []
        formset.changed_objects = [(sub.instance, sub.changed_data) for sub in formset.forms if sub.changed_data]
        for sub in formset.forms:
            changes = {name: sub.cleaned_data[name] for name in sub.changed_data if name in sub.cleaned_data}
            if changes:  # the row exists: it was created with the service
                inline.update(form.instance, changes, actor=request.user)

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


def register_settings_inline(inline: Any) -> None:
    """An app above fleet shows its per-service settings on the service's admin page."""
    if inline not in ServiceAdmin.inlines:
        ServiceAdmin.inlines = [*ServiceAdmin.inlines, inline]


@admin.register(EngineState)
class EngineStateAdmin(ReadOnlyAdmin):
    list_display = ("engine", "state", "failures", "last_error", "changed_at")


@admin.register(SwarmNode)
class SwarmNodeAdmin(ReadOnlyAdmin):
    """What the controller last saw of the swarm's nodes; drain and activate on /nodes/."""

    list_display = ("hostname", "state", "availability", "role", "leader", "addr", "engine_version", "seen_at")
    list_filter = ("state", "availability", "role")
