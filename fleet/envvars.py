"""A service's own environment variables (Service.env): validation, masking and the environment
an instance starts with. Pure functions, no I/O but reading the console's own environment.

An instance never inherits the console's environment: that holds HMS_SECRET_KEY, DATABASE_URL,
the Redis URL, the e-mail password and the audit signing-key path. It gets only
  - ALLOWED (locale, time zone, search path: what any program expects to find),
  - the service's own variables (Service.env, edited by an administrator in Django admin),
  - the console's markers (HMSMGMT_*, PORT), which no service variable may override.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Taken from the console's environment when set. HOME is not: it is the console user's home, and
# an instance run as another user gets that user's home (fleet.drivers.process).
ALLOWED = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR")
ALLOWED_PREFIXES = ("LC_",)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names no service variable may take: the markers the drivers set (how the console finds its
# instances again) and the console's own settings (a copied console secret is still refused).
RESERVED = ("PORT", "DATABASE_URL")
RESERVED_PREFIXES = ("HMSMGMT_", "HMS_")
MAX_VARIABLES = 64
MAX_NAME = 128
MAX_VALUE = 4096
MAX_TOTAL = 16_384  # bytes of all names and values together

# What admin shows instead of a stored value; submitting it unchanged keeps the stored value.
MASK = "••••••"


def env_errors(value: Any) -> list[str]:
    """Why value is not an acceptable Service.env (a JSON object of str → str), as sentences."""
    if not isinstance(value, dict):
        return ["The environment must be a JSON object of NAME: \"value\" pairs."]
    errors = []
    if len(value) > MAX_VARIABLES:
        errors.append(f"At most {MAX_VARIABLES} variables ({len(value)} given).")
    total = 0
    for name, val in value.items():
        if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
            errors.append(f"{str(name)[:40]!r} is not a variable name (letters, digits and '_', not starting "
                          f"with a digit, at most {MAX_NAME} characters).")
            continue
        if name in RESERVED or name.startswith(RESERVED_PREFIXES):
            errors.append(f"{name} is reserved for the console (PORT, DATABASE_URL, HMS_* and HMSMGMT_* "
                          f"are never passed from a service's settings).")
        if not isinstance(val, str):
            errors.append(f"The value of {name} must be a string.")
            continue
        if "\0" in val:
            errors.append(f"The value of {name} holds a NUL character.")
        if len(val) > MAX_VALUE:
            errors.append(f"The value of {name} is longer than {MAX_VALUE} characters.")
        total += len(name.encode()) + len(val.encode())
    if total > MAX_TOTAL:
        errors.append(f"The variables take {total} bytes; at most {MAX_TOTAL}.")
    return errors


def masked(env: Mapping[str, str]) -> dict[str, str]:
    """env with every value replaced by MASK: what a page or form shows back."""
    return {name: MASK for name in env}


def unmask(submitted: Mapping[str, Any], stored: Mapping[str, str]) -> dict[str, Any]:
    """The env an edit means: a value left as MASK keeps the stored value of that name."""
    return {name: stored.get(name, val) if val == MASK and name in stored else val
            for name, val in submitted.items()}


def changed_names(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, list[str]]:
    """The names added, removed and changed between two envs: what the audit entry records
    (never a value)."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(n for n in set(before) & set(after) if before[n] != after[n]),
    }


def base_environment(console_env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of the console's environment."""
    return {k: v for k, v in console_env.items() if k in ALLOWED or k.startswith(ALLOWED_PREFIXES)}


def instance_environment(console_env: Mapping[str, str], service_env: Mapping[str, str],
                         markers: Mapping[str, str]) -> dict[str, str]:
    """allowlist ← service variables ← markers (later wins: a service variable may set PATH or TZ,
    never a marker)."""
    service = {k: v for k, v in service_env.items()
               if k not in RESERVED and not k.startswith(RESERVED_PREFIXES)}
    return {**base_environment(console_env), **service, **markers}
