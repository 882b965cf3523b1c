from __future__ import annotations

from django import forms

from fleet.forms import ScaleForm


class OverrideForm(ScaleForm):
    ttl_minutes = forms.IntegerField(required=False, min_value=0, error_messages={
        "invalid": "Instances and TTL must be whole numbers, 0 or more.",
        "min_value": "Instances and TTL must be whole numbers, 0 or more.",
    })
    reason = forms.CharField(required=False, max_length=200, strip=True)
