"""The admission law, driven by a fake clock and synthetic lag samples: no
loop, no sockets, no sleeping. Windows are 100 ms, samples every 5 ms."""

from __future__ import annotations

import math

import pytest

from tests.overload.fakes import Clock, HandLoop
from turnout.overload.admission import (
    GRPC_MODEL_INFER,
    Admission,
    AdmissionGate,
    AdmissionSettings,
    sheddable,
)
from turnout.overload.gate import FREE, OpenGate, Pass

INFER = "/v2/models/breast_cancer/infer"
SETTINGS = AdmissionSettings()  # target 20 ms, windows of 100 ms, min_limit 8


class Sim:
    """A gate under a fake clock: requests enter and leave at set times, lag samples every 5 ms."""

    def __init__(self, settings: AdmissionSettings = SETTINGS) -> None:
        self.clock = Clock()
        self.gate = AdmissionGate(settings, self.clock)
        self.held: list[tuple[float, Pass]] = []  # (when it leaves, its pass)
        self.admitted = self.refused = 0

    def run(self, seconds: float, *, arrivals: int, sojourn: float, lag: float = 0.0005) -> None:
        """``arrivals`` inference requests per 5 ms step, each leaving ``sojourn`` s after entering."""
        for _ in range(round(seconds / 0.005)):
            self.clock.now += 0.005
            self.leave_due()
            for _ in range(arrivals):
                ticket = self.gate.enter(INFER)
                if ticket is None:
                    self.refused += 1
                else:
                    self.admitted += 1
                    self.held.append((self.clock.now + sojourn, ticket))
            self.gate.observe(self.clock.now, lag)

    def closed_loop(self, seconds: float, clients: int, sojourn: float, lag: float = 0.001) -> None:
        """``clients`` that each send again as soon as answered, each answer ``sojourn`` s after entering."""
        for _ in range(round(seconds / 0.005)):
            self.clock.now += 0.005
            self.leave_due()
            while self.gate.in_flight < clients:
                ticket = self.gate.enter(INFER)
                if ticket is None:
                    self.refused += 1
                    break
                self.admitted += 1
                self.held.append((self.clock.now + sojourn, ticket))
            self.gate.observe(self.clock.now, lag)

    def leave_due(self) -> None:
        still = []
        for due, ticket in self.held:
            if due <= self.clock.now:
                ticket.leave()
            else:
                still.append((due, ticket))
        self.held = still


def test_only_inference_is_counted_or_shed() -> None:
    assert sheddable(INFER)
    assert sheddable("/v2/models/m/versions/3/infer")
    assert sheddable(GRPC_MODEL_INFER)
    gate, _ = _limited_gate()
    for path in (
        "/v2/health/ready",
        "/v2/health/live",
        "/v2/models/breast_cancer",
        "/v2/models/breast_cancer/ready",
        "/metrics",
        "/v2/repository/index",
        "/v2/repository/models/breast_cancer/load",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelMetadata",
    ):
        assert not sheddable(path)
        assert gate.enter(path) is FREE, path
    assert gate.enter(INFER) is None
    assert gate.enter(GRPC_MODEL_INFER) is None


def test_an_open_door_admits_any_number_while_nothing_queues() -> None:
    sim = Sim()
    sim.run(1.0, arrivals=50, sojourn=0.002)  # 10,000/s, each 2 ms: 20 in flight
    held = [sim.gate.enter(INFER) for _ in range(5000)]  # and a burst of 5,000 more at once
    assert all(ticket is not None for ticket in held)
    assert sim.refused == 0
    assert sim.gate.limit == math.inf


def test_a_closed_loop_at_capacity_is_never_shed() -> None:
    # 64 clients against a batching model: a standing batch queue of ~10 ms,
    # whose minimum drifts between 3 and 8 ms, and a busy loop
    sim = Sim()
    for step in range(100):
        sim.closed_loop(0.1, clients=64, sojourn=0.003 + 0.005 * (step % 7) / 6, lag=0.001)
    assert sim.refused == 0
    assert sim.gate.limit == math.inf


def test_a_slow_model_is_no_queue() -> None:
    # every request takes 300 ms: the service floor, not queueing
    sim = Sim()
    sim.closed_loop(10.0, clients=200, sojourn=0.3)
    assert sim.refused == 0
    assert sim.gate.limit == math.inf


def test_one_long_window_is_a_burst_two_are_a_standing_queue() -> None:
    sim = Sim()
    sim.run(0.5, arrivals=4, sojourn=0.002)
    for _ in range(20):  # one window of 100 ms whose every turn was late (a pause, a long batch)
        sim.clock.now += 0.005
        sim.gate.observe(sim.clock.now, 0.080)
    sim.run(0.5, arrivals=4, sojourn=0.002)
    assert sim.gate.limit == math.inf
    sim.run(0.35, arrivals=4, sojourn=0.002, lag=0.080)  # two whole windows and more: the loop is behind
    assert sim.gate.limit == SETTINGS.min_limit  # few in flight: the limit starts at the floor
    assert sim.gate.delay == pytest.approx(0.080)


def test_a_growing_queue_is_limited_and_shed_at_once() -> None:
    sim = Sim()
    sim.run(1.0, arrivals=2, sojourn=0.002)  # the floor: 2 ms
    # open-loop overload: 40 arrivals every 5 ms, served ever more slowly
    sojourn = 0.002
    peak = 0
    for _ in range(4):
        sojourn += 0.05
        sim.run(0.1, arrivals=40, sojourn=sojourn)
        peak = max(peak, sim.gate.in_flight)
    limit = sim.gate.limit
    assert limit != math.inf
    assert SETTINGS.min_limit <= limit <= peak / 4  # cut by about target / delay
    refused = sim.refused
    assert sum(sim.gate.enter(INFER) is None for _ in range(100)) == 100
    assert sim.refused == refused  # direct calls are counted by the gate, not the simulator
    assert sim.gate.shed >= 100
    assert sim.gate.retry_after == 1


def test_the_limit_settles_where_the_queue_is_on_target() -> None:
    # A server that completes 2,000 requests/s whatever is in flight: time in
    # flight is in_flight / 2000 s (Little). At 20 ms of queueing over a 2 ms
    # floor, ~44 in flight; an open loop offers 8,000/s.
    sim = Sim()
    sim.run(1.0, arrivals=1, sojourn=0.002)
    limits = []
    for _ in range(60):
        sojourn = 0.002 + max(sim.gate.in_flight, 1) / 2000
        sim.run(0.1, arrivals=40, sojourn=sojourn)
        limits.append(sim.gate.limit)
    settled = limits[-30:]
    assert all(limit != math.inf for limit in settled)
    assert min(settled) >= 20 and max(settled) <= 70, settled
    assert sim.refused > sim.admitted  # most of 4x its capacity is shed


def test_the_door_reopens_once_nothing_is_shed() -> None:
    sim = Sim()
    sim.run(0.5, arrivals=2, sojourn=0.002)
    sim.run(0.5, arrivals=40, sojourn=0.002, lag=0.060)  # the loop is behind: limiting
    assert sim.gate.limit != math.inf
    sim.run(0.5, arrivals=1, sojourn=0.002)  # the overload ends; below reopen_after windows
    assert sim.gate.limit != math.inf
    sim.run(0.6, arrivals=1, sojourn=0.002)
    assert sim.gate.limit == math.inf
    assert all(sim.gate.enter(INFER) is not None for _ in range(1000))


def test_while_limiting_a_window_on_target_with_shedding_raises_the_limit() -> None:
    sim = Sim()
    sim.run(0.5, arrivals=2, sojourn=0.002)
    sim.run(0.3, arrivals=40, sojourn=0.002, lag=0.060)
    low = sim.gate.limit
    sim.run(0.5, arrivals=40, sojourn=0.002)  # on target, still more offered than admitted
    assert sim.gate.limit > low


def test_the_floor_does_not_learn_a_held_queue() -> None:
    # limiting for many seconds with time in flight 40 ms over a 2 ms floor:
    # still above target, so still limiting (the floor stays put)
    sim = Sim()
    sim.run(1.0, arrivals=2, sojourn=0.002)
    sim.run(10.0, arrivals=40, sojourn=0.042)
    assert sim.gate.limit == SETTINGS.min_limit
    assert sim.gate.delay == pytest.approx(0.040, abs=0.001)


def test_leave_is_idempotent_and_frees_a_place() -> None:
    gate, held = _limited_gate()
    assert len(held) == SETTINGS.min_limit
    assert gate.enter(INFER) is None
    ticket = held[0]
    ticket.leave()
    ticket.leave()  # twice, as every exit path may call it
    again = gate.enter(INFER)
    assert again is not None
    assert gate.enter(INFER) is None  # one place freed, not two


def test_the_minimum_is_always_admitted() -> None:
    clock = Clock()
    gate = AdmissionGate(AdmissionSettings(min_limit=3), clock)
    for _ in range(60):  # a loop far behind with nothing in flight
        clock.now += 0.005
        gate.observe(clock.now, 0.5)
    assert gate.limit == 3
    held = [gate.enter(INFER) for _ in range(3)]
    assert all(ticket is not None for ticket in held)
    assert gate.enter(INFER) is None


def test_disabled_is_an_open_gate_with_nothing_running() -> None:
    loop = HandLoop()
    admission = Admission(AdmissionSettings(enabled=False), loop)  # type: ignore[arg-type]
    assert isinstance(admission.gate, OpenGate)
    admission.start()
    admission.close()
    assert loop.calls == 0


def test_enabled_admission_runs_the_probe_on_the_loop() -> None:
    loop = HandLoop()
    clock = Clock()
    admission = Admission(SETTINGS, loop, clock)  # type: ignore[arg-type]
    gate = admission.gate
    assert isinstance(gate, AdmissionGate)
    admission.start()
    assert loop.calls == 1
    for _ in range(60):  # each turn 80 ms late: the probe feeds the gate
        clock.now += SETTINGS.period + 0.080
        loop.fire()
    assert gate.limit == SETTINGS.min_limit
    admission.close()
    assert loop.pending is None


@pytest.mark.parametrize(
    "change",
    [
        {"target": 0.0},
        {"interval": -1.0},
        {"period": 0.0},
        {"min_limit": 0},
        {"smoothing": 0.0},
        {"smoothing": 1.5},
        {"reopen_after": 0},
        {"retry_after": 0},
    ],
)
def test_settings_are_checked(change: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdmissionSettings(**change)  # type: ignore[arg-type]


def _limited_gate() -> tuple[AdmissionGate, list[Pass]]:
    """A gate limiting to min_limit (8), and the passes of the 8 places, all taken."""
    clock = Clock()
    gate = AdmissionGate(SETTINGS, clock)
    for _ in range(60):  # a loop far behind with nothing in flight
        clock.now += 0.005
        gate.observe(clock.now, 0.5)
    assert gate.limit == SETTINGS.min_limit
    held = [gate.enter(INFER) for _ in range(SETTINGS.min_limit)]
    return gate, [ticket for ticket in held if ticket is not None]


def test_while_limiting_the_limit_moves_in_small_steps() -> None:
    clock = Clock()
    gate = AdmissionGate(AdmissionSettings(interval=0.125), clock)  # windows of 16 samples, exact in binary
    held = [gate.enter(INFER) for _ in range(200)]

    def window(lag: float) -> None:
        for _ in range(16):
            clock.now += 1 / 128
            gate.observe(clock.now, lag)

    window(0.0)
    window(0.2)
    window(0.2)  # two windows at 200 ms: the 200 in flight scaled by 20/200 at once
    assert gate.limit == 20
    window(0.2)  # still far above target (the queue admitted before is draining): a small cut
    assert gate.limit == 20 - 0.25 * 10  # a quarter of the way to half
    window(0.025)  # just above target: a quarter of the way to 20/25 of it
    assert gate.limit == pytest.approx(17.5 - 0.25 * 17.5 * (1 - 0.02 / 0.025))
    limit = gate.limit
    assert gate.enter(INFER) is None  # shed: the limit is what holds requests back
    window(0.001)  # on target, and shedding: up by a quarter of its square root
    assert gate.limit == pytest.approx(limit + 0.25 * limit**0.5)
    limit = gate.limit
    window(0.001)  # on target, nothing shed: the limit holds nothing back, it stays
    assert gate.limit == limit
    assert all(ticket is not None for ticket in held)
