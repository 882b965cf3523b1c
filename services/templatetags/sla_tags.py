"""{% autoscale_panel service %}: the "why N instances" panel and timeline, rendered in place on
the service page (the page's own view need not know about the autoscaler)."""

from __future__ import annotations

from typing import Any

from django import template

from services.views_sla import explanation

register = template.Library()


@register.inclusion_tag("services/_autoscale.html", takes_context=True)
def autoscale_panel(context: template.Context, service: Any) -> dict[str, Any]:
    request = context.get("request")
    return {**explanation(getattr(request, "user", None), service), "request": request}
