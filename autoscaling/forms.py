from __future__ import annotations

from django import forms

from autoscaling.models import AutoscaleSettings
from fleet.forms import ScaleForm


class OverrideForm(ScaleForm):
    ttl_minutes = forms.IntegerField(required=False, min_value=0, error_messages={
        "invalid": "Instances and TTL must be whole numbers, 0 or more.",
        "min_value": "Instances and TTL must be whole numbers, 0 or more.",
    })
    reason = forms.CharField(required=False, max_length=200, strip=True)


class AutoscaleSettingsForm(forms.ModelForm):
    class Meta:
        model = AutoscaleSettings
        fields = ("autoscale_enabled", "min_instances", "max_instances", "target_cpu_percent", "target_latency_ms",
                  "target_demand_per_instance", "scale_up_max_step", "scale_down_max_step",
                  "scale_up_stabilization_seconds", "scale_down_stabilization_seconds")
