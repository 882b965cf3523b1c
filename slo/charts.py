"""Chart geometry for the SLA pages, server-rendered SVG: computed here, drawn by the templates,
so the pages work offline and without JavaScript. Pure: no queries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

GREEN, AMBER, RED, GREY, BLUE = "#2da44e", "#d4a72c", "#cf222e", "#d0d7de", "#1f6feb"

def uptime_bars(points: list[dict[str, Any]], objective: float, *, width: int = 540, height: int = 34) -> dict:
    """One bar per period: green at or above the objective, amber within a point of it, red below,
    grey without probes. Height shows how much of the period was up."""
    n = max(1, len(points))
    gap = 1 if n > 40 else 2
    w = width / n
    bars = []
    for i, p in enumerate(points):
        up = p["uptime"]
        color = GREY if up is None else GREEN if up >= objective else AMBER if up >= objective - 1 else RED
        h = height if up is None else max(4.0, height * up / 100)
        label = "no data" if up is None else f"{up:.3f} % up ({p['probes']} probes)"
        bars.append({"x": round(i * w, 2), "y": round(height - h, 2), "w": round(max(1.0, w - gap), 2),
                     "h": round(h, 2), "color": color, "title": f"{p['label']}: {label}"})
    return {"width": width, "height": height, "bars": bars}


def sparkline(points: list[dict[str, Any]], objective: float) -> dict:
    """The SLA table's small chart: the uptime bars, 4 px per period."""
    return uptime_bars(points, objective, width=4 * max(1, len(points)), height=16)


def latency_chart(series: list[dict[str, Any]], objective: int, *, minutes: int = 60, now: datetime | None = None,
                  width: int = 540, height: int = 140) -> dict:
    now = now or timezone.now()
    start = now - timedelta(minutes=minutes)
    values = [v for p in series for v in (p["p50"], p["p95"]) if v is not None]
    top = max([objective * 1.25, *values]) if values else objective * 1.25
    pad = 24

    def xy(at: datetime, v: float) -> str:
        x = pad + (width - pad) * max(0.0, (at - start).total_seconds()) / (minutes * 60)
        y = height - height * min(v, top) / top
        return f"{x:.1f},{y:.1f}"

    def line(key: str) -> str:
        return " ".join(xy(p["at"] + timedelta(seconds=30), p[key]) for p in series if p[key] is not None)

    return {"width": width, "height": height, "pad": pad, "p50": line("p50"), "p95": line("p95"),
            "objective_y": round(height - height * objective / top, 1), "objective": objective,
            "top": round(top), "empty": not values, "minutes": minutes,
            "last_p95": next((p["p95"] for p in reversed(series) if p["p95"] is not None), None)}


def budget_view(remaining: float | None) -> dict[str, Any]:
    if remaining is None:
        return {"text": "no data", "pct": 0, "color": GREY}
    pct = max(0.0, min(1.0, remaining)) * 100
    color = GREEN if remaining > 0.5 else AMBER if remaining > 0.1 else RED
    return {"text": f"{remaining:.1%}", "pct": round(pct, 1), "color": color}
