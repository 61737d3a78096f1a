"""The lag probe on a loop driven by hand: each sample is how late the timer ran."""

from __future__ import annotations

import pytest

from tests.overload.fakes import Clock, HandLoop
from turnout.overload.lag import LagProbe


def test_each_sample_is_how_late_the_timer_ran() -> None:
    loop, clock = HandLoop(), Clock()
    samples: list[tuple[float, float]] = []
    probe = LagProbe(loop, 0.005, lambda now, lag: samples.append((now, lag)), clock)  # type: ignore[arg-type]
    probe.start()
    probe.start()  # once only
    assert loop.calls == 1
    for late in (0.0, 0.120, 0.001):
        clock.now += 0.005 + late
        loop.fire()
    # the next run is asked for a period after this one ran: one sample per long turn, no catch-up burst
    assert [lag for _, lag in samples] == pytest.approx([0.0, 0.120, 0.001], abs=1e-9)
    assert samples[-1][0] == clock.now
    probe.close()
    assert loop.pending is None
    probe.close()
