from __future__ import annotations

from typing import Any

from django import forms

from core import outbound
from slo.models import AlertChannel, Objectives


class AlertChannelForm(forms.ModelForm):
    """The service is resolved by the view through the permission choke point, not by the form."""

    class Meta:
        model = AlertChannel
        fields = ("name", "kind", "target")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind, target = data.get("kind"), data.get("target", "")
        if kind == AlertChannel.Kind.WEBHOOK and not target.startswith(("http://", "https://")):
            self.add_error("target", "A webhook target must be an http(s) URL.")
        if kind == AlertChannel.Kind.ALERTMANAGER and (not target.startswith(("http://", "https://"))
                                                       or "?" in target or "#" in target):
            # The base URL only: /api/v2/alerts is appended (a query or fragment would end up in between).
            self.add_error("target", "An Alertmanager target must be its base http(s) URL, e.g. http://alertmanager:9093.")
        if kind == AlertChannel.Kind.EMAIL and "@" not in target:
            self.add_error("target", "An email target must be an address.")
        if kind in (AlertChannel.Kind.WEBHOOK, AlertChannel.Kind.ALERTMANAGER) and "target" not in self.errors:
            # Checked here (a 400 naming the field) and again at every send (DNS can change).
            if (why := outbound.url_problem(target)) is not None:
                self.add_error("target", f"The target URL is {why}; only public addresses, or those the "
                                         "operator names in HMS_OUTBOUND_ALLOW, may be called.")
        return data


class ObjectivesForm(forms.ModelForm):
    class Meta:
        model = Objectives
        fields = ("uptime_objective", "latency_objective_ms", "burn_1h_factor", "burn_1h_severity",
                  "burn_6h_factor", "burn_6h_severity", "burn_3d_factor", "burn_3d_severity")
