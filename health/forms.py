from __future__ import annotations

from django import forms

from health.models import ProbeSettings


class MaintenanceForm(forms.Form):
    minutes = forms.IntegerField(min_value=1, max_value=7 * 24 * 60, error_messages={
        "invalid": "Duration must be a whole number of minutes between 1 and 10080.",
        "required": "Duration must be a whole number of minutes between 1 and 10080.",
        "min_value": "Duration must be a whole number of minutes between 1 and 10080.",
        "max_value": "Duration must be a whole number of minutes between 1 and 10080.",
    })
    starts_at = forms.DateTimeField(required=False, input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S",
                                                                   "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
                                    error_messages={"invalid": "Start must be a date and time like 2026-01-31T22:00."})
    reason = forms.CharField(required=False, max_length=200, strip=True)


class ProbeSettingsForm(forms.ModelForm):
    """Validated like admin: the model's validators and clean() (timeout ≤ interval); Django's
    FloatField refuses NaN and infinities."""

    class Meta:
        model = ProbeSettings
        fields = ("probe_interval_seconds", "probe_timeout_seconds", "failure_threshold", "success_threshold")
