"""Numbers are finite: the one check every place a number enters uses (model validators, the
workflow step params, the probe loop, API schemas).

NaN and the infinities pass every range check written as comparisons (NaN < 1 and NaN > 1 are both
false; PostgreSQL even sorts NaN above every number), so a probe interval of NaN or +inf would get
past "at least 1 second" and then break the schedule that reads it: the event loop's timer heap
cannot order NaN, and math.ceil(inf) raises. Python's float() and json accept "nan", "inf",
"Infinity" and NaN; Django's form FloatField refuses them, models and pydantic do not by default.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from django.core.exceptions import ValidationError
from pydantic import BeforeValidator, Field, StrictInt

# For ninja/pydantic schemas: a float field that refuses NaN and ±inf (a 422 → the API's 400).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _integral(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3 (so JSON Schema's "integer" says, and so a
    client's JSON encoder may write it); 2.5, "3" and true stay refused."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# For schemas: an integer field that takes 3.0 as 3 and refuses 2.5, "3" and true.
WholeNumber = Annotated[StrictInt, BeforeValidator(_integral)]


def is_finite_number(value: Any) -> bool:
    """An int or a finite float (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def validate_finite(value: Any) -> None:
    """Model-field validator: refuses NaN and ±inf (run by full_clean, so by every action that
    validates like admin, core.rows.apply_fields)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("Enter a finite number (not NaN or infinity).", code="not_finite")


def finite_or(value: Any, default: float, *, low: float | None = None, high: float | None = None) -> float:
    """`value` as a float if it is a finite number within [low, high], else `default`: for code that
    reads a stored setting and must keep working whatever one row holds (the probe loop)."""
    if not is_finite_number(value):
        return default
    value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        return default
    return value
