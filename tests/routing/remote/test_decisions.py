"""The pure decisions of remote endpoint sets: the retry budget, outlier
ejection and the power of two choices, with the time and the randomness
passed in (no sleeping, no sockets)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from turnout.routing.remote.balance import pick
from turnout.routing.remote.budget import RetryBudget
from turnout.routing.remote.ejection import Outliers
from turnout.routing.remote.latency import RecentLatency


def test_the_retry_budget_is_a_share_of_the_requests_within_its_window() -> None:
    budget = RetryBudget(share=0.2, window=10.0, min_per_second=0.0)
    assert not budget.try_spend(0.0)  # nothing sent yet, no reserve: no retry
    for i in range(100):
        budget.request(i * 0.01)
    spent = sum(budget.try_spend(1.0) for _ in range(50))
    assert spent == 20  # 20% of 100 requests, however many failures want a retry
    assert budget.balance(1.0) == pytest.approx(0.0)
    assert not budget.try_spend(9.0)  # still inside the window
    for _ in range(10):
        budget.request(9.5)
    assert budget.try_spend(9.5) and budget.try_spend(9.5) and not budget.try_spend(9.5)
    assert budget.balance(25.0) == pytest.approx(0.0)  # everything of the first window forgotten


def test_the_reserve_lets_a_quiet_set_retry_and_no_more() -> None:
    budget = RetryBudget(share=0.2, window=10.0, min_per_second=0.5)  # 5 attempts a window
    assert sum(budget.try_spend(1.0) for _ in range(20)) == 5
    assert sum(budget.try_spend(30.0) for _ in range(20)) == 5  # a new window, a new reserve
    with pytest.raises(ValueError, match="share"):
        RetryBudget(share=1.5)


def test_a_replica_failing_in_a_row_is_ejected_longer_each_time_and_comes_back() -> None:
    outliers = Outliers(["a", "b", "c", "d"], consecutive_failures=3, base_ejection=10.0, max_ejection=25.0)
    for _ in range(2):
        assert not outliers.failed("a", 0.0)
    outliers.succeeded("a")  # a success in between: the count starts again
    assert not outliers.failed("a", 0.0) and not outliers.failed("a", 0.0)
    assert outliers.failed("a", 1.0)  # the third in a row
    assert outliers.available(1.0) == ["b", "c", "d"] and outliers.ejected(1.0) == ["a"]
    assert not outliers.failed("a", 2.0)  # attempts still in flight when it went out change nothing
    assert outliers.available(11.0) == ["a", "b", "c", "d"]  # 10 s for a first ejection
    for _ in range(3):
        ejected = outliers.failed("a", 12.0)
    assert ejected and outliers.ejected(31.0) == ["a"] and outliers.available(32.0)[0] == "a"  # 20 s the second
    for now in (40.0, 80.0):
        for _ in range(3):
            outliers.failed("a", now)
    assert outliers.ejected(80.0 + 24.9) == ["a"] and "a" in outliers.available(80.0 + 25.0)  # capped at 25 s


def test_no_more_than_the_share_is_ejected_but_always_one_and_a_probe_brings_one_back() -> None:
    pair = Outliers(["a", "b"], consecutive_failures=1, max_ejected_share=0.1)
    assert pair.failed("a", 0.0)  # a tenth of two is none, but one may always go out
    assert not pair.failed("b", 0.0)  # not both: something must still take the traffic
    assert pair.available(0.0) == ["b"]
    pair.probe_passed("a", 5.0)
    assert pair.available(5.0) == ["a", "b"]
    assert pair.failed("b", 6.0)  # with a back in, b may go out now
    five = Outliers(["a", "b", "c", "d", "e"], consecutive_failures=1, max_ejected_share=0.5)
    assert [five.failed(name, 0.0) for name in "abcde"] == [True, True, False, False, False]


def test_two_choices_take_the_less_loaded_and_a_retry_goes_elsewhere() -> None:
    rng = random.Random(7)
    replicas = ["a", "b", "c"]
    outstanding = {"a": 10, "b": 0, "c": 5}
    taken = Counter(pick(replicas, outstanding, rng) for _ in range(3000))
    assert taken["a"] == 0  # a is the most loaded of any two drawn
    assert taken["b"] > 1800 and taken["c"] > 800  # b whenever drawn (2 pairs in 3), c against a
    assert {pick(replicas, outstanding, rng, tried={"b", "c"}) for _ in range(50)} == {"a"}
    assert pick(replicas, outstanding, rng, tried=set(replicas)) in replicas  # all tried: any again
    assert pick(["a"], outstanding, rng) == "a"
    assert pick([], outstanding, rng) is None


def test_a_changed_set_keeps_the_record_of_the_replicas_that_stay() -> None:
    outliers = Outliers(["a", "b", "c", "d"], consecutive_failures=1, base_ejection=10.0, max_ejected_share=0.5)
    assert outliers.failed("a", 0.0)
    outliers.replace(["a", "b", "e"])  # d left, e came (a DNS answer changed)
    assert outliers.available(1.0) == ["b", "e"]  # a is still out
    assert not outliers.failed("d", 1.0)  # gone: nothing to count
    assert not outliers.failed("b", 1.0)  # one of three may be out, and a is
    with pytest.raises(ValueError, match="replicas"):
        outliers.replace([])


def test_the_hedge_delay_is_the_recent_quantile_once_enough_is_known() -> None:
    recent = RecentLatency(quantile=0.95, size=100, every=10, least=20)
    for _ in range(19):
        recent.observe(0.001)
    assert recent.value() is None  # a cold set does not hedge
    recent.observe(0.001)
    assert recent.value() == pytest.approx(0.001)
    for i in range(100):  # the ring now holds 0..99 ms
        recent.observe(i / 1000)
    assert recent.value() == pytest.approx(0.095)
    for _ in range(9):  # not yet worked out again
        recent.observe(1.0)
    assert recent.value() == pytest.approx(0.095)
    recent.observe(1.0)
    assert recent.value() == pytest.approx(1.0)  # ten of 100 at 1 s: past the 95th


def test_hedges_leave_half_the_budget_to_retries() -> None:
    budget = RetryBudget(share=0.2, window=10.0, min_per_second=0.0)
    for _ in range(100):
        budget.request(1.0)  # 20 extra attempts allowed
    hedges = sum(budget.try_spend(1.0, keep=0.5) for _ in range(50))
    assert hedges == 10  # half of them
    retries = sum(budget.try_spend(1.0) for _ in range(50))
    assert retries == 10  # the half hedges had to leave
