"""JSON that every database here can store: the checks behind "bad input is a 4xx, never a 500".

PostgreSQL refuses text containing NUL (in text columns and in jsonb, where JSON allows "\\u0000"),
and no encoder can write a lone UTF-16 surrogate ("\\ud800") or a number that overflowed to
infinity (1e400) or NaN. Python's json module accepts all of these, so without a check they reach
the database or the response encoder and become a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any


class UnstorableJSON(ValueError):
    """Parsed, but holds a value no database column or JSON encoder here accepts."""


class _Unfinite(float):
    """NaN, ±Infinity or a number that overflowed, kept with the text it was written as, so that
    problem() can name both the field it is in and what was sent."""

    text: str


def _unfinite(text: str) -> float:
    value = _Unfinite(text if text in ("NaN", "Infinity", "-Infinity") else "inf" if text[0] != "-" else "-inf")
    value.text = text[:40]
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _unfinite(text)


def text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate"
    return None


def _at(where: str) -> str:
    return f"The value at '{where[:100]}'" if where else "The value"


def problem(value: Any) -> str | None:
    """Why `value` (as json.loads returns it) cannot be stored, naming where; None if it can.
    Iterative, so a deeply nested document cannot exhaust the stack here."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if (why := text_problem(item)) is not None:
                return f"{_at(where)} {why}"
        elif isinstance(item, float) and not math.isfinite(item):
            sent = getattr(item, "text", repr(item))
            return f"{_at(where)} ({sent}) is not a finite number (NaN and infinities are refused)"
        elif isinstance(item, dict):
            for key, child in item.items():
                path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and (why := text_problem(key)) is not None:
                    return f"{_at(where)} has a key that {why}"
                stack.append((path, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    return None


def loads(raw: str | bytes) -> Any:
    """json.loads, then the checks above. Raises ValueError (json.JSONDecodeError for syntax,
    UnstorableJSON for content) with a message fit for an API error's detail."""
    try:
        # NaN/Infinity (which Python's json accepts) and overflowing numbers are parsed, then
        # refused by problem() naming where they are: "The value at 'instances' (NaN) ...".
        value = json.loads(raw, parse_constant=_unfinite, parse_float=_finite_float)
    except RecursionError:
        raise UnstorableJSON("The JSON is nested too deeply.") from None
    if (why := problem(value)) is not None:
        raise UnstorableJSON(why + ".")
    return value
