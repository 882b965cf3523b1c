"""Exceptions the apps raise for the API layer to render as JSON refusals.

They live here (the lowest app the others share) so services and workflows can raise them without
importing the project package above them.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


class PolicyViolation(Exception):
    def __init__(self, decision: Any) -> None:
        super().__init__(decision.detail)
        self.decision = decision
