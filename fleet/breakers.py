"""One circuit breaker per engine, so an unreachable or hung engine does not slow the others.

The tick lists every engine once per pass (reconcile.fleet_view). Each listing runs on a thread of
its engine's own and is waited for at most HMS_ENGINE_WAIT_SECONDS: an engine that does not answer
in time (a frozen Docker daemon accepts connections and never replies; its client would wait out
its 5 s timeout) or fails opens its breaker, and its services are left alone until the breaker's
back-off has passed (1 s, doubling to 30 s); then one trial listing is let through (half-open). A
hung call still running is never joined by a second one. Process services, listed apart, keep
their cadence meanwhile. Transitions are stored (fleet.models.EngineState) for the system page
and the metrics; the decision itself (`Breaker`) is pure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from fleet.drivers import EngineUnavailable
from fleet.models import EngineState

log = logging.getLogger(__name__)
T = TypeVar("T")
BASE_SECONDS, CAP_SECONDS = 1.0, 30.0


@dataclass
class Breaker:
    """closed: calls go through; open: skipped until retry_at; half-open: one trial call."""

    engine: str
    state: str = "closed"
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""

    def allow(self, now: float) -> bool:
        if self.state == "open" and now >= self.retry_at:
            self.state = "half-open"
        return self.state != "open"

    def succeeded(self) -> bool:
        """Returns True when the state changed."""
        changed = self.state != "closed"
        self.state, self.failures, self.last_error = "closed", 0, ""
        return changed

    def failed(self, now: float, error: str) -> bool:
        changed = self.state != "open"
        self.failures += 1
        self.state, self.last_error = "open", error[:300]
        self.retry_at = now + min(CAP_SECONDS, BASE_SECONDS * 2 ** (self.failures - 1))
        return changed


@dataclass
class Guard:
    """A breaker and the engine's own thread for it."""

    breaker: Breaker
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    pending: Future | None = None

    def call(self, fn: Callable[[], T], now: float) -> T:
        """fn() through the breaker, waited for at most HMS_ENGINE_WAIT_SECONDS; EngineUnavailable
        when the breaker is open, the engine fails, or it does not answer in time."""
        b = self.breaker
        if not b.allow(now):
            raise EngineUnavailable(f"{b.engine} engine skipped: breaker open after {b.last_error}")
        if self.pending is not None and not self.pending.done():
            self._failed(now, "its previous call is still waiting for an answer")
            raise EngineUnavailable(f"{b.engine} engine hung ({b.last_error})")
        self.pending = self.pool.submit(fn)
        try:
            result = self.pending.result(timeout=settings.HMS_ENGINE_WAIT_SECONDS)
        except FutureTimeout:
            self._failed(now, f"no answer within {settings.HMS_ENGINE_WAIT_SECONDS:g} s")
            raise EngineUnavailable(f"{b.engine} engine does not answer ({b.last_error})") from None
        except EngineUnavailable as exc:
            self._failed(now, str(exc))
            raise
        if b.succeeded():
            log.warning("%s engine answers again: breaker closed", b.engine)
            record(b)
        return result

    def _failed(self, now: float, error: str) -> None:
        if self.breaker.failed(now, error):
            log.error("%s engine: breaker open (%s); its services wait, the others go on", self.breaker.engine, error)
            record(self.breaker)


_guards: dict[str, Guard] = {}


def guard(engine: str) -> Guard:
    if engine not in _guards:
        _guards[engine] = Guard(Breaker(engine))
    return _guards[engine]


def record(b: Breaker) -> None:
    """Store a transition (observed state, not audited); never fails the tick."""
    try:
        EngineState.objects.update_or_create(engine=b.engine, defaults={
            "state": b.state, "failures": b.failures, "last_error": b.last_error, "changed_at": timezone.now()})
    except DatabaseError:
        log.warning("cannot record the %s engine's breaker state", b.engine)
