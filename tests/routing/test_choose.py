"""Routing decisions, without sockets: splits within statistical bounds over
10,000 decisions, sticky keys, exact 0 and 100, and refused bad policies."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout.routing.choose import BUCKETS, Decision, alternatives, bucket, choose
from turnout.routing.policy import ABTest, BlueGreen, Canary, PolicyError, Shadow, Single, check_variants

DECISIONS = 10_000


def within_binomial_bounds(count: int, total: int, share: float) -> bool:
    """``count`` of ``total`` is within 5 standard deviations of ``share``:
    a false alarm about once in 3.5 million runs."""
    mean = total * share
    sigma = math.sqrt(total * share * (1 - share))
    return abs(count - mean) <= 5 * sigma + 1


@pytest.mark.parametrize("weight", [1.0, 5.0, 25.0, 50.0, 90.0])
def test_a_canary_split_lands_within_bounds(weight: float) -> None:
    rng = random.Random(7)
    policy = Canary("v1", "v2", weight)
    served = Counter(choose(policy, None, rng).serve for _ in range(DECISIONS))
    assert within_binomial_bounds(served["v2"], DECISIONS, weight / 100), served
    assert served["v1"] + served["v2"] == DECISIONS


@pytest.mark.parametrize(("weight", "expected"), [(0.0, "v1"), (100.0, "v2")])
def test_weights_of_0_and_100_are_exact(weight: float, expected: str) -> None:
    class Extremes:
        """The generator's extremes, then ordinary values."""

        def __init__(self) -> None:
            ordinary = random.Random(1)
            self.values = iter([0.0, 1.0 - 2**-53, *(ordinary.random() for _ in range(DECISIONS))])

        def random(self) -> float:
            return next(self.values)

    rng = Extremes()
    assert {choose(Canary("v1", "v2", weight), None, rng).serve for _ in range(DECISIONS)} == {expected}
    shadow = Shadow("v1", "v2", weight)
    mirrored = {choose(shadow, None, Extremes()).mirror for _ in range(100)}
    assert mirrored == ({None} if weight == 0 else {"v2"})


def test_an_ab_split_without_keys_and_with_keys_lands_within_bounds() -> None:
    policy = ABTest((("a", 20.0), ("b", 30.0), ("c", 50.0)))
    rng = random.Random(11)
    random_split = Counter(choose(policy, None, rng).serve for _ in range(DECISIONS))
    keyed_split = Counter(choose(policy, f"user-{n}", rng).serve for n in range(DECISIONS))
    for split in (random_split, keyed_split):
        for name, weight in policy.weights:
            assert within_binomial_bounds(split[name], DECISIONS, weight / 100), (name, split)


def test_sticky_keys_never_change_variant() -> None:
    policy = ABTest((("control", 50.0), ("treatment", 50.0)), key="user-id")
    first = {n: choose(policy, f"user-{n}", random.Random(n)).serve for n in range(2000)}
    for seed in range(3):  # whatever the random source says
        rng = random.Random(1000 + seed)
        assert all(choose(policy, f"user-{n}", rng).serve == v for n, v in first.items())


def test_the_bucket_is_the_same_in_every_process() -> None:
    """Another interpreter, with another string-hash seed, puts keys in the same buckets."""
    keys = ["alice", "bob", "", "ü", "user-12345"]
    script = f"from turnout.routing.choose import bucket; print([bucket(k) for k in {keys!r}])"
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )  # fmt: skip
    assert other.stdout.strip() == str([bucket(k) for k in keys])
    assert all(0 <= bucket(k) < BUCKETS for k in keys)


@given(st.text(max_size=40), st.floats(min_value=0, max_value=100))
def test_a_key_always_gets_a_variant_that_has_weight(key: str, first: float) -> None:
    policy = ABTest((("a", first), ("b", 100.0 - first)))
    served = choose(policy, key, random.Random(0)).serve
    assert dict(policy.weights)[served] > 0


def test_blue_green_and_single() -> None:
    rng = random.Random(3)
    assert {choose(BlueGreen("blue", "green", "green"), None, rng) for _ in range(100)} == {Decision("green")}
    assert choose(Single("v1"), "anyone", rng) == Decision("v1")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ABTest((("a", 60.0), ("b", 30.0))), "must sum to 100, these sum to 90"),
        (lambda: ABTest((("a", 100.0),)), "at least two variants"),
        (lambda: ABTest((("a", 50.0), ("a", 50.0))), "named more than once"),
        (lambda: Canary("v1", "v2", 120.0), "percentage from 0 to 100, got 120"),
        (lambda: Canary("v1", "v1", 5.0), "named more than once"),
        (lambda: Shadow("v1", "v2", float("nan")), "percentage from 0 to 100"),
        (lambda: BlueGreen("blue", "green", "red"), "neither blue ('blue') nor green ('green')"),
        (lambda: Single(""), "needs a name"),
    ],
)
def test_bad_policies_are_refused_with_the_reason(make: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()  # type: ignore[operator]


def test_a_policy_may_only_name_the_endpoints_variants() -> None:
    check_variants(Canary("v1", "v2", 5.0), {"v1", "v2", "v3"})
    with pytest.raises(PolicyError, match=r"unknown variant\(s\) \['v9'\]; this endpoint has: v1, v2"):
        check_variants(Canary("v1", "v9", 5.0), {"v1", "v2"})


def test_alternatives_are_the_other_serving_variants() -> None:
    assert alternatives(Canary("1", "2", 10.0), "2") == ("1",)
    assert alternatives(BlueGreen("1", "2", "1"), "1") == ("2",)
    assert alternatives(ABTest((("a", 50.0), ("b", 30.0), ("c", 20.0))), "b") == ("a", "c")
    assert alternatives(Shadow("1", "2", 100.0), "1") == ()  # a shadow never serves
    assert alternatives(Single("1"), "1") == ()


@pytest.mark.parametrize("key", ["", "ключ", "user id", "x" * 65, "a:b"])
def test_ab_keys_must_be_header_names(key: str) -> None:
    with pytest.raises(PolicyError, match="must be a header name"):
        ABTest((("a", 50.0), ("b", 50.0)), key)
