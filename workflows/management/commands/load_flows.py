"""manage.py load_flows PATH: create or update flows from YAML/JSON files (a file or a folder).

A file holds one flow ({slug, name, steps, ...}) or a list of them, or {"flows": [...]}. Every
flow is validated before anything is saved; a refused definition names the file, the flow and
the problem (cycle, unknown action, missing dependency, bad params), and nothing is changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from workflows import actions, flowfile
from workflows.models import WorkflowDefinition

ACTOR = "system:load_flows"
FIELDS = {"slug", "name", "description", "tags", "steps", "enabled", "deadline"}


def read_flows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")) if path.is_dir() else [path]
    if not files:
        raise CommandError(f"{path}: no .yaml, .yml or .json files")
    out: list[tuple[str, dict[str, Any]]] = []
    for f in files:
        try:
            text = f.read_text()
            doc = json.loads(text) if f.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise CommandError(f"{f}: cannot read: {exc}") from None
        if isinstance(doc, dict) and "flows" in doc:
            doc = doc["flows"]
        for i, flow in enumerate(doc if isinstance(doc, list) else [doc]):
            if not isinstance(flow, dict):
                raise CommandError(f"{f}: flow {i} must be a mapping")
            out.append((f"{f}: flow '{flow.get('slug', i)}'", flow))
    return out


def build(where: str, raw: dict[str, Any]) -> tuple[WorkflowDefinition, bool, dict[str, Any]]:
    sections = flowfile.sections()  # e.g. schedules: (the schedules app's)
    allowed = FIELDS | set(sections)
    extra = set(raw) - allowed
    if extra:
        raise CommandError(f"{where}: unknown keys {', '.join(sorted(extra))} (allowed: {', '.join(sorted(allowed))})")
    parsed: dict[str, Any] = {}
    for key, section in sections.items():
        if key in raw:
            try:
                parsed[key] = section.parse(raw[key])
            except flowfile.SectionError as exc:
                raise CommandError(f"{where}: refused: {key}: {exc}") from None
    slug = raw.get("slug")
    if not isinstance(slug, str) or not slug:
        raise CommandError(f"{where}: needs a slug (the flow id)")
    existing = WorkflowDefinition.objects.filter(slug=slug).first()
    flow = existing or WorkflowDefinition(slug=slug)
    changes: dict[str, Any] = {}
    for key in FIELDS - {"slug"}:
        if key in raw:
            if existing is not None and getattr(existing, key) != raw[key]:
                changes[key] = [getattr(existing, key), raw[key]]
            setattr(flow, key, raw[key])
    if not flow.name:
        flow.name = slug
    try:
        flow.full_clean()
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        raise CommandError(f"{where}: refused: {problems}") from None
    flow._sections = parsed  # type: ignore[attr-defined]  # applied once the flow is saved
    return flow, existing is None, changes


class Command(BaseCommand):
    help = "Create or update workflow definitions from YAML/JSON files (a file or a folder)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.exists():
            raise CommandError(f"{path}: no such file or folder")
        with transaction.atomic():  # all or nothing: one bad flow leaves every flow as it was
            built = [build(where, raw) for where, raw in read_flows(path)]
            slugs = [f.slug for f, _, _ in built]
            dupes = {s for s in slugs if slugs.count(s) > 1}
            if dupes:
                raise CommandError(f"{path}: flow id defined twice: {', '.join(sorted(dupes))}")
            sections = flowfile.sections()
            for flow, created, changes in built:
                if not created and not changes:
                    self.stdout.write(f"unchanged {flow.slug}")
                else:
                    actions.save_flow(flow, actor=ACTOR, created=created, changes=changes)
                    self.stdout.write(f"{'created' if created else 'updated'} {flow.slug}")
                for key, parsed in flow._sections.items():  # type: ignore[attr-defined]
                    try:
                        lines = sections[key].apply(flow, parsed, ACTOR)
                    except flowfile.SectionError as exc:
                        raise CommandError(f"flow '{flow.slug}': refused: {key}: {exc}") from None
                    for line in lines:
                        self.stdout.write(f"  {line}")
