"""Each controller loop leaves a heartbeat row other processes read (metrics, health checks, the
system page), written at most once a second and removed when the process stops cleanly."""

from __future__ import annotations

import os

import pytest

from controller.loop import Beat, Controller
from controller.models import LoopBeat

pytestmark = pytest.mark.django_db


def test_a_pass_is_recorded_at_most_once_a_second() -> None:
    beat = Beat("tick")
    beat(0.0123)
    row = LoopBeat.objects.get(loop="tick", pid=os.getpid())
    assert (row.last_pass_ms, row.passes) == (12.3, 1)
    beat(0.5)  # within the second: counted, not written
    assert LoopBeat.objects.get(pk=row.pk).passes == 1
    beat.written -= Beat.EVERY
    beat(0.5)
    row.refresh_from_db()
    assert (row.last_pass_ms, row.passes) == (500.0, 3) and row.beat_at >= row.started_at
    beat.clear()
    assert not LoopBeat.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_controller_that_stops_leaves_no_heartbeat(demo) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    controller = Controller(loops=("tick",))
    real = controller.beats["tick"]

    def beat(took: float) -> None:
        real(took)
        seen.append(LoopBeat.objects.filter(loop="tick", pid=os.getpid()).count())

    controller.loops["tick"].on_pass = beat
    controller.run_forever(max_ticks=2)
    assert seen == [1, 1] and not LoopBeat.objects.exists()
