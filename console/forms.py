"""The service SLA page's settings form: one form of each app that owns a part (health's probe
settings, slo's objectives, autoscaling's settings), posted together and valid only together."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import QueryDict

from autoscaling.forms import AutoscaleSettingsForm
from fleet.forms import form_problem
from fleet.models import Service
from health.forms import ProbeSettingsForm
from slo.forms import ObjectivesForm

PARTS: tuple[tuple[str, type[forms.ModelForm]], ...] = (
    ("probe_settings", ProbeSettingsForm),
    ("objectives", ObjectivesForm),
    ("autoscale_settings", AutoscaleSettingsForm),
)


class ServiceSettings:
    """The three forms of one service's settings; field names are unique across them."""

    def __init__(self, service: Service, data: QueryDict | None = None) -> None:
        self.service = service
        # Fresh rows, not the service's cached ones: a refused form must not leave its values
        # on the objects the page then shows.
        self.forms = {attr: form(data, instance=form._meta.model.objects.get(pk=service.pk)) for attr, form in PARTS}

    @property
    def fields(self) -> list[tuple[str, Any]]:
        """(name, current value) in page order."""
        return [(name, getattr(form.instance, name)) for form in self.forms.values() for name in form.Meta.fields]

    def fields_dict(self) -> dict[str, Any]:
        return dict(self.fields)

    def is_valid(self) -> bool:
        return all([form.is_valid() for form in self.forms.values()])  # a list: every form reports its errors

    def problem(self) -> str:
        return "; ".join(p for p in (form_problem(form) for form in self.forms.values()) if p)

    def cleaned(self, attr: str) -> dict[str, Any]:
        form = self.forms[attr]
        return {name: form.cleaned_data[name] for name in form.Meta.fields}
