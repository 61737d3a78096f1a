"""Token buckets per credential, on a fake clock."""

from __future__ import annotations

import pytest

from turnout.security.ratelimit import Rate, RateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(Rate(per_second=2.0, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0  # refilled, but never past the burst
    assert [bucket.take(10.0) for _ in range(3)][-1] > 0


def test_each_credential_has_its_own_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(1.0, 1), clock)
    assert limiter.check("a") == 0.0
    assert limiter.check("a") == pytest.approx(1.0)
    assert limiter.check("b") == 0.0
    clock.now += 1.0
    assert limiter.check("a") == 0.0


def test_a_credentials_own_rate_overrides_the_default_and_no_rate_means_no_limit() -> None:
    clock = Clock()
    unlimited = RateLimiter(None, clock)
    assert all(unlimited.check("a") == 0.0 for _ in range(1000))
    limiter = RateLimiter(Rate(1.0, 1), clock)
    generous = Rate(100.0, 50)
    assert all(limiter.check("vip", generous) == 0.0 for _ in range(50))
    assert limiter.check("vip", generous) > 0


def test_refilled_buckets_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(10.0, 5), clock)
    limiter.SWEEP_ABOVE = 100  # type: ignore[misc]
    for caller in range(100):
        limiter.check(f"subject-{caller}")
    clock.now += 1.0  # every bucket is full again
    limiter.check("one-more")
    assert len(limiter) == 1


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Rate(0.0, 1)
    with pytest.raises(ValueError):
        Rate(1.0, 0)
