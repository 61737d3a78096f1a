"""The waits among loading pipelines: a loop is found whatever its length,
and forgotten once the waits end."""

from __future__ import annotations

from turnout.pipeline.waits import Waits


def test_a_wait_that_would_close_a_loop_names_it() -> None:
    waits = Waits()
    assert waits.cycle("a", "b") is None
    with waits.waiting("a", "b"):
        assert waits.cycle("b", "a") == ["b", "a", "b"]
        assert waits.cycle("b", "c") is None
        with waits.waiting("b", "c"):
            assert waits.cycle("c", "a") == ["c", "a", "b", "c"]
            assert waits.cycle("d", "a") is None  # a waits (through b) for c, not for d
    assert waits.cycle("b", "a") is None  # a no longer waits


def test_waits_are_counted_so_one_ending_leaves_the_other() -> None:
    waits = Waits()
    with waits.waiting("a", "b"):
        with waits.waiting("a", "b"):  # two versions of a, say
            pass
        assert waits.cycle("b", "a") == ["b", "a", "b"]
