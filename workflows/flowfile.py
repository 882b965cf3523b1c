"""Sections of a flow file that other apps own (`schedules:` belongs to the schedules app, above
this one): an app registers a parser and an applier in its ready(); load_flows parses every
section before anything is saved and applies it after its flow is saved, in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SectionError(ValueError):
    """A section refused; the message names the entry and the problem."""


@dataclass(frozen=True)
class Section:
    parse: Callable[[Any], Any]  # raw YAML/JSON value → parsed (raises SectionError)
    apply: Callable[[Any, Any, str], list[str]]  # (saved flow, parsed, actor) → lines to print


_sections: dict[str, Section] = {}


def register_section(key: str, parse: Callable[[Any], Any], apply: Callable[[Any, Any, str], list[str]]) -> None:
    _sections[key] = Section(parse, apply)


def sections() -> dict[str, Section]:
    return dict(_sections)
