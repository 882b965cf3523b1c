"""Demo fleet, flows and the chapter's policy; used by load_demo and up. Idempotent."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from console import actions as console_actions
from fleet import actions as service_actions
from fleet.models import Service
from fleet.sample.image import build_sample_image, image_exists
from policies import actions as policy_actions
from policies.models import Policy
from workflows import actions as workflow_actions
from workflows.models import WorkflowDefinition

ACTOR = "system:load_demo"
SAMPLE_COMMAND = "{python} -m fleet.sample --port {port}"

SERVICES = [
    ("HMS-SVC", "Patient records service", 2),
    ("HMS-API", "Appointment scheduler API", 1),
    ("analytics", "Analytics jobs", 1),
]


def _http(name: str, service: str, after: list[str] | None = None, ms: int = 50) -> dict[str, Any]:
    return {"name": name, "action": "http", "params": {"service": service, "path": "/work", "body": {"ms": ms}},
            "depends_on": after or [], "retries": 2, "timeout": 10}


FLOWS: list[dict[str, Any]] = [
    {
        "slug": "exportPatientData",
        "name": "Export patient data",
        "tags": ["export"],
        "steps": [_http("collect", "HMS-SVC"), _http("package", "HMS-API", ["collect"])],
    },
    {
        "slug": "reportingFlow",
        "name": "Data ingest → validation → reporting",
        "tags": ["reporting"],
        "steps": [
            _http("ingest", "HMS-SVC"),
            _http("validation", "analytics", ["ingest"]),
            _http("reporting", "HMS-API", ["validation"]),
        ],
    },
    {
        "slug": "analyticsReport",
        "name": "Analytics report (data.seconds sets how long it runs)",
        "tags": ["analytics"],
        "steps": [{"name": "crunch", "action": "sleep", "params": {"seconds": "$data.seconds"}, "timeout": 3600}],
    },
    {
        "slug": "fanOutReport",
        "name": "Parallel fan-out and fan-in",
        "tags": ["reporting"],
        "steps": [
            _http("extract", "HMS-SVC"),
            _http("stats_visits", "analytics", ["extract"]),
            _http("stats_billing", "analytics", ["extract"]),
            _http("stats_labs", "HMS-SVC", ["extract"]),
            _http("merge", "HMS-API", ["stats_visits", "stats_billing", "stats_labs"]),
        ],
    },
]


def load_demo(driver: str = "process") -> list[str]:
    done: list[str] = []
    if driver in ("docker", "swarm"):
        done += _ensure_sample_image()
    for name, description, desired in SERVICES:
        svc = Service.objects.filter(name=name).first()
        wanted = {"driver": driver, "description": description, "command": SAMPLE_COMMAND,
                  "image": settings.HMS_SAMPLE_IMAGE, "port": 8080, "health_path": "/health"}
        if svc is None:
            # Probes every 2 s with SLA objectives and autoscaler bounds ready; autoscaling itself
            # stays off so the demo's counts do not move until someone turns it on (SLA page).
            svc = Service(name=name, **wanted)
            service_actions.save_service(svc, actor=ACTOR, created=True)
            console_actions.update_service_settings(svc, {
                "probe_interval_seconds": 2.0, "uptime_objective": 99.9, "latency_objective_ms": 300,
                "min_instances": 1, "max_instances": 5}, actor=ACTOR)
            service_actions.scale_service(svc, desired, actor=ACTOR, reason="demo default")
            done.append(f"service {name} ({driver}, {desired} instances)")
        else:
            before = {k: getattr(svc, k) for k in wanted}
            if before != wanted:
                for k, v in wanted.items():
                    setattr(svc, k, v)
                service_actions.save_service(svc, actor=ACTOR, created=False, before=before)
                done.append(f"service {name} updated")
    for flow in FLOWS:
        existing = WorkflowDefinition.objects.filter(slug=flow["slug"]).first()
        if existing is None:
            workflow_actions.save_flow(WorkflowDefinition(**flow), actor=ACTOR, created=True)
            done.append(f"flow {flow['slug']}")
    if not Policy.objects.filter(name="analytics jobs per user ≤ 5").exists():
        policy_actions.save_policy(Policy(
            name="analytics jobs per user ≤ 5",
            kind=Policy.Kind.CONCURRENT_RUNS,
            scope_tag="analytics",
            per_user=True,
            limit=5,
            description="No more than 5 concurrent analytics jobs per user (the chapter's rule).",
        ), actor=ACTOR)
        done.append("policy 'analytics jobs per user ≤ 5'")
    return done


def _ensure_sample_image() -> list[str]:
    """docker/swarm demos run the sample image; nothing can be pulled, so build it when missing."""

    if image_exists(settings.HMS_SAMPLE_IMAGE):
        return []
    build_sample_image(settings.HMS_SAMPLE_IMAGE)
    return [f"image {settings.HMS_SAMPLE_IMAGE} (built FROM scratch with busybox-static)"]
