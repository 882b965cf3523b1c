"""A flow's run history: its last runs (for the duration chart), p50/p95 durations and the success
rate over 7 and 30 days, and each step's median duration. A constant number of queries (four),
whatever the number of runs: the rates are counted in the database; the percentiles come from the
newest SAMPLE finished runs of the window (a per-second schedule makes 2.6 million runs a month)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from core.stats import percentile
from workflows.models import StepRun, WorkflowRun

WINDOWS = (7, 30)
SAMPLE = 5000
STEP_RUNS = 200  # step medians over the steps of the flow's newest runs
FINISHED = (WorkflowRun.Status.SUCCEEDED, WorkflowRun.Status.FAILED, WorkflowRun.Status.CANCELLED)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _window(durations: list[float], counts: dict[str, int], days: int) -> dict[str, Any]:
    ordered = sorted(durations)
    done = counts[f"done{days}"]
    return {
        "days": days,
        "runs": done,
        "succeeded": counts[f"ok{days}"],
        "successRate": round(counts[f"ok{days}"] / done, 4) if done else None,
        "p50Seconds": percentile(ordered, 0.5),
        "p95Seconds": percentile(ordered, 0.95),
        "sampled": len(ordered),
    }


def flow_stats(slug: str, *, last: int = 50, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    runs = WorkflowRun.objects.filter(flow_slug=slug)
    recent = list(runs.order_by("-id").values("id", "status", "created_at", "started_at", "finished_at")[:last])
    since = {d: now - timedelta(days=d) for d in WINDOWS}
    counts = runs.filter(finished_at__gte=since[max(WINDOWS)], status__in=FINISHED).aggregate(
        **{f"done{d}": Count("id", filter=Q(finished_at__gte=since[d])) for d in WINDOWS},
        **{f"ok{d}": Count("id", filter=Q(finished_at__gte=since[d], status=WorkflowRun.Status.SUCCEEDED))
           for d in WINDOWS})
    counts = {k: v or 0 for k, v in counts.items()}
    sample = list(runs.filter(finished_at__gte=since[max(WINDOWS)], status__in=FINISHED)
                  .order_by("-finished_at").values_list("created_at", "started_at", "finished_at")[:SAMPLE])
    windows = []
    for d in WINDOWS:
        durations = [s for c, st, f in sample if f >= since[d] and (s := _seconds(st or c, f)) is not None]
        windows.append(_window(durations, counts, d))
    step_rows = (StepRun.objects.filter(run__flow_slug=slug, run_id__in=[r["id"] for r in recent[:STEP_RUNS]],
                                        finished_at__isnull=False, started_at__isnull=False)
                 .values_list("name", "started_at", "finished_at"))
    per_step: dict[str, list[float]] = {}
    for name, st, f in step_rows:
        per_step.setdefault(name, []).append(_seconds(st, f) or 0.0)
    steps = [{"name": n, "medianSeconds": percentile(sorted(v), 0.5), "samples": len(v)}
             for n, v in per_step.items()]
    slowest = max((s["medianSeconds"] or 0.0 for s in steps), default=0.0)
    for s in steps:
        s["slowest"] = bool(slowest) and s["medianSeconds"] == slowest
    return {
        "flowId": slug,
        "runs": [{"runId": r["id"], "status": r["status"], "createdAt": r["created_at"],
                  "durationSeconds": _seconds(r["started_at"] or r["created_at"], r["finished_at"])}
                 for r in reversed(recent)],  # oldest first: the chart reads left to right
        "windows": windows,
        "steps": sorted(steps, key=lambda s: -(s["medianSeconds"] or 0.0)),
    }


STATUS_FILL = {"succeeded": "#2e7d32", "failed": "#c62828", "cancelled": "#757575", "running": "#1565c0",
               "pending": "#90a4ae"}


def chart(runs: list[dict[str, Any]], *, width: int = 600, height: int = 120) -> dict[str, Any]:
    """Bar geometry for the duration chart (an SVG the template draws; no script): each run a bar
    as tall as its duration against the longest, coloured by status; an unfinished run a stub."""
    longest = max((r["durationSeconds"] or 0.0 for r in runs), default=0.0) or 1.0
    slot = width / max(len(runs), 1)
    bars = []
    for i, r in enumerate(runs):
        d = r["durationSeconds"]
        h = max(2.0, (d or 0.0) / longest * (height - 4)) if d is not None else 4.0
        bars.append({**r, "x": round(i * slot + 1, 2), "w": round(max(slot - 2, 1), 2), "y": round(height - h, 2),
                     "h": round(h, 2), "fill": STATUS_FILL.get(r["status"], "#90a4ae")})
    return {"bars": bars, "width": width, "height": height, "longest": longest}
