"""The schedule form of the flow page: it parses (JSON, numbers); schedules.actions validates."""

from __future__ import annotations

from typing import Any

from django import forms

from core import safejson
from schedules.models import Schedule


def _json(raw: str, what: str, *, null: bool) -> Any:
    raw = (raw or "").strip()
    if not raw:
        return None if null else {}
    try:
        value = safejson.loads(raw)
    except ValueError as exc:
        raise forms.ValidationError(f"{what}: {exc}") from None
    if not isinstance(value, dict) and not (null and value is None):
        raise forms.ValidationError(f"{what} must be a JSON object.")
    return value


class ScheduleForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    cron = forms.CharField(max_length=200, required=False, help_text="5 fields, or 6 with seconds last")
    interval_seconds = forms.IntegerField(required=False, min_value=1, label="or every N seconds")
    timezone = forms.CharField(max_length=64, initial="UTC")
    data = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 30}), initial="{}")
    missed_policy = forms.ChoiceField(choices=Schedule.Missed.choices, initial=Schedule.Missed.ONCE)
    missed_bound = forms.IntegerField(min_value=1, max_value=100, initial=10)
    overlap_policy = forms.ChoiceField(choices=Schedule.Overlap.choices, initial=Schedule.Overlap.SKIP)
    deadline = forms.CharField(required=False, label="deadline (JSON, optional)")
    owner = forms.CharField(max_length=150, required=False, help_text="administrators only; default: you")

    def clean_data(self) -> dict[str, Any]:
        return _json(self.cleaned_data.get("data", ""), "Run data", null=False)

    def clean_deadline(self) -> dict[str, Any] | None:
        return _json(self.cleaned_data.get("deadline", ""), "Deadline", null=True)

    def fields_for_action(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {"name": d["name"], "cron": d["cron"], "interval_seconds": d["interval_seconds"],
                "timezone": d["timezone"], "data": d["data"], "missed_policy": d["missed_policy"],
                "missed_bound": d["missed_bound"], "overlap_policy": d["overlap_policy"], "deadline": d["deadline"]}

    @classmethod
    def of(cls, s: Schedule) -> ScheduleForm:
        import json

        return cls(initial={"name": s.name, "cron": s.cron, "interval_seconds": s.interval_seconds,
                            "timezone": s.timezone, "data": json.dumps(s.data),
                            "missed_policy": s.missed_policy, "missed_bound": s.missed_bound,
                            "overlap_policy": s.overlap_policy,
                            "deadline": json.dumps(s.deadline) if s.deadline is not None else "",
                            "owner": s.owner.get_username()})
