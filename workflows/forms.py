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


class IdListField(forms.Field):
    """Several values of one name (checkboxes: runs=3&runs=5) as a list of positive ints."""

    widget = forms.MultipleHiddenInput

    def __init__(self, *, max_items: int, **kwargs: Any) -> None:
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[int]:
        values = value if isinstance(value, (list, tuple)) else ([value] if value else [])
        if len(values) > self.max_items:
            raise forms.ValidationError(f"Select at most {self.max_items} runs at once.")
        out: list[int] = []
        for v in values:
            if not str(v).isdigit() or not 0 < int(v) < 2**63:
                raise forms.ValidationError(f"Not a run id: {str(v)[:20]!r}.")
            out.append(int(v))
        return sorted(set(out))


class BulkForm(forms.Form):
    """Cancel or retry the selected runs, or every run matching the list's filter."""

    op = forms.ChoiceField(choices=[("cancel", "cancel"), ("retry", "retry")],
                           error_messages={"required": "Choose cancel or retry.",
                                           "invalid_choice": "Choose cancel or retry."})
    scope = forms.ChoiceField(choices=[("selected", "the selected runs"), ("filter", "every run matching the filter")],
                              initial="selected")
    runs = IdListField(max_items=500, required=False)
    status = forms.CharField(required=False, max_length=16)
    flow = forms.CharField(required=False, max_length=100)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("scope") == "selected" and not data.get("runs"):
            raise forms.ValidationError("Select at least one run (or choose every run matching the filter).")
        if "\x00" in (data.get("flow") or "") + (data.get("status") or ""):
            raise forms.ValidationError("The filter holds a NUL character.")
        return data
