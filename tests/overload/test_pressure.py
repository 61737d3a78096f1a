"""Pressure: busy from CPU time shares, read at most once a period (fake clocks)."""

from __future__ import annotations

from turnout.overload.pressure import Pressure


class Clocks:
    def __init__(self) -> None:
        self.wall = self.thread = self.process = 0.0

    def spend(self, wall: float, thread: float, process: float) -> None:
        self.wall += wall
        self.thread += thread
        self.process += process


def pressure(clocks: Clocks, cores: int = 2) -> Pressure:
    return Pressure(0.75, 0.1, cores, lambda: clocks.wall, lambda: clocks.thread, lambda: clocks.process)


def test_an_idle_process_is_not_busy() -> None:
    clocks = Clocks()
    gauge = pressure(clocks)
    clocks.spend(0.1, 0.02, 0.03)
    assert not gauge.busy()


def test_a_saturated_event_loop_is_busy_even_with_cores_to_spare() -> None:
    clocks = Clocks()
    gauge = pressure(clocks, cores=4)
    clocks.spend(0.1, 0.09, 0.09)  # the loop's thread on the CPU 90% of the time; the process 22% of 4 cores
    assert gauge.busy()


def test_threads_filling_the_cores_make_it_busy() -> None:
    clocks = Clocks()
    gauge = pressure(clocks, cores=2)
    clocks.spend(0.1, 0.02, 0.18)  # the loop is idle, but model threads use 90% of both cores
    assert gauge.busy()


def test_the_clocks_are_read_once_a_period() -> None:
    clocks = Clocks()
    gauge = pressure(clocks)
    clocks.spend(0.1, 0.1, 0.1)
    assert gauge.busy()
    clocks.spend(0.05, 0.0, 0.0)  # half a period, idle: the last reading stands
    assert gauge.busy()
    clocks.spend(0.05, 0.0, 0.0)  # a whole period since the last reading, idle
    assert not gauge.busy()
