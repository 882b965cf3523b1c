"""Django forms for the workflow pages' posts: they parse and validate, the actions change state."""

from __future__ import annotations

from typing import Any

from django import forms

from core import safejson


class LaunchForm(forms.Form):
    flowId = forms.CharField(max_length=100)  # noqa: N815  (the REST contract's name, posted as is)
    data = forms.CharField(required=False)

    def clean_data(self) -> dict[str, Any]:
        raw = self.cleaned_data.get("data") or "{}"
        try:
            data = safejson.loads(raw)
        except safejson.UnstorableJSON as exc:
            raise forms.ValidationError(f"Run data: {exc}") from None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise forms.ValidationError('Run data must be a JSON object, e.g. {"user": 123}.')
        return data


class ApprovalForm(forms.Form):
    approve = forms.TypedChoiceField(choices=[("true", "approve"), ("false", "reject")],
                                     coerce=lambda v: v == "true",
                                     error_messages={"required": "Choose approve or reject.",
                                                     "invalid_choice": "Choose approve or reject."})
    comment = forms.CharField(required=False, strip=True)  # longer ones are cut, as the API does

    def clean_comment(self) -> str:
        return self.cleaned_data.get("comment", "")[:500]
