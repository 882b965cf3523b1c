"""Django forms for fleet's posts: they parse and validate, the actions change state."""

from __future__ import annotations

from django import forms
from django.conf import settings

from fleet.models import Service

# The settings a service's SLA page edits (probe, SLO and autoscaler knobs), in page order.
SETTINGS_FIELDS = (
    "probe_interval_seconds", "probe_timeout_seconds", "failure_threshold", "success_threshold",
    "uptime_objective", "latency_objective_ms", "autoscale_enabled", "min_instances", "max_instances",
    "target_cpu_percent", "target_latency_ms", "target_demand_per_instance", "scale_up_max_step",
    "scale_down_max_step", "scale_up_stabilization_seconds", "scale_down_stabilization_seconds",
)


class ServiceSettingsForm(forms.ModelForm):
    """Validated like the admin form: the model's validators and Service.clean() (min ≤ max,
    timeout ≤ interval); Django's FloatField refuses NaN and infinities."""

    class Meta:
        model = Service
        fields = SETTINGS_FIELDS


class ScaleForm(forms.Form):
    instances = forms.IntegerField(min_value=0, error_messages={
        "invalid": "Instances must be a whole number, 0 or more.",
        "required": "Instances must be a whole number, 0 or more.",
        "min_value": "Instances must be a whole number, 0 or more.",
    })

    def clean_instances(self) -> int:
        value = self.cleaned_data["instances"]
        if value > settings.HMS_MAX_INSTANCES:
            raise forms.ValidationError(f"Instances must be at most {settings.HMS_MAX_INSTANCES} (HMS_MAX_INSTANCES).")
        return value


def form_problem(form: forms.BaseForm) -> str:
    """A refused form as one sentence naming each field, for a page's error line."""
    parts = []
    for name, errors in form.errors.items():
        label = "" if name == "__all__" else name.replace("_", " ") + ": "
        parts.append(label + " ".join(errors))
    return "; ".join(parts)
