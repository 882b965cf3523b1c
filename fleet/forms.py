"""Django forms for fleet's posts: they parse and validate, the actions change state."""

from __future__ import annotations

from django import forms
from django.conf import settings


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
