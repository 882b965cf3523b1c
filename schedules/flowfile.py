"""The `schedules:` section of a flow file (manage.py load_flows), registered in apps.py:

    schedules:
      - name: nightly            # required: the schedule's key within its flow (updated in place)
        cron: "30 2 * * *"       # or interval: 3600 (seconds)
        timezone: Europe/Berlin  # default UTC
        owner: bob               # required: the runs act as this user
        data: {dataset: daily}
        missed: once             # skip | once | each (default once); missed_bound: 10
        overlap: skip            # skip | queue | allow (default skip)
        enabled: true
        deadline: {within_seconds: 1800}   # or {by: "06:00", tz: Europe/Berlin}; replaces the flow's

Schedules of the flow that the file does not name are left as they are."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from schedules import actions
from schedules.cadence import Invalid
from schedules.models import Schedule
from workflows.flowfile import SectionError

KEYS = {"name": "name", "cron": "cron", "interval": "interval_seconds", "timezone": "timezone", "data": "data",
        "missed": "missed_policy", "missed_bound": "missed_bound", "overlap": "overlap_policy",
        "enabled": "enabled", "deadline": "deadline"}


def parse(raw: Any) -> list[tuple[dict[str, Any], Any]]:
    if not isinstance(raw, list):
        raise SectionError("must be a list of schedules")
    out: list[tuple[dict[str, Any], Any]] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"schedule {i}"
        if not isinstance(entry, dict):
            raise SectionError(f"{where} must be a mapping")
        unknown = set(entry) - set(KEYS) - {"owner"}
        if unknown:
            raise SectionError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))} "
                               f"(allowed: {', '.join(sorted([*KEYS, 'owner']))})")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise SectionError(f"{where} needs a name (its key within the flow)")
        where = f"schedule '{name}'"
        if name in names:
            raise SectionError(f"{where} is defined twice")
        names.add(name)
        username = entry.get("owner")
        owner = get_user_model().objects.filter(username=username).first() if isinstance(username, str) else None
        if owner is None:
            raise SectionError(f"{where}: owner must name an existing user (the runs act as them)")
        fields = {KEYS[k]: v for k, v in entry.items() if k in KEYS}
        fields.setdefault("cron", "")
        fields.setdefault("interval_seconds", None)
        try:
            fields = actions.validate(fields)
        except Invalid as exc:
            raise SectionError(f"{where}: {exc.field}: {exc.detail}") from None
        out.append((fields, owner))
    return out


def apply(flow: Any, parsed: list[tuple[dict[str, Any], Any]], actor: str) -> list[str]:
    lines = []
    for fields, owner in parsed:
        existing = Schedule.objects.filter(flow=flow, name=fields["name"]).first()
        try:
            if existing is None:
                s = actions.create_schedule(flow, fields, owner=owner, actor=actor, trusted=True)
                lines.append(f"schedule {s.name}: created (id {s.pk})")
            else:
                before = existing.updated_at
                s = actions.update_schedule(existing, fields, actor=actor, owner=owner, trusted=True)
                lines.append(f"schedule {s.name}: {'updated' if s.updated_at != before else 'unchanged'}")
        except Invalid as exc:
            raise SectionError(f"schedule '{fields['name']}': {exc.field}: {exc.detail}") from None
    return lines
