"""The rollout guard's judgement: is the candidate worse than the baseline
allows, on the evidence of one window where both served?

Both sides are noisy, and the guard looks every tick, so it compares
confidence bounds, never raw estimates:

- latency, at the median and at p99: the candidate's quantile is at least its
  lower confidence bound, the baseline's at most its upper one, each an order
  statistic of the window's latencies (distribution-free: the count of
  samples under a true quantile is binomial). Unhealthy only when the
  candidate's lower bound exceeds what the baseline's upper bound allows:
  the ratio times it, or it plus ``latency_slack_ms``, whichever is larger,
  so sub-millisecond jitter is never a 3x regression. The median shows a
  slower model within a few dozen requests; p99 needs hundreds, and catches
  a candidate that is slow only sometimes;
- errors: a lower confidence bound on how much the candidate's error rate
  exceeds the baseline's (Newcombe's interval for a difference of rates),
  against an allowed excess: ``error_slack``, or the baseline's rate times
  ``max_error_ratio`` - 1 where larger. Comparing the candidate's lower bound
  with the ratio times the baseline's upper bound made 5% errors against
  none undetectable in a 300-request step; with the baseline's raw rate, a
  baseline whose 25 requests showed no error rolled back 9% of identical
  candidates failing 2% of the time.

``confidence`` is per look (0.999 by default): with a look every tick over
windows that only grow, identical candidates are promoted, and 5% errors or
3x latency rolled back within two steps, each in more than 99% of rollouts
(tests/routing/test_guard.py simulates them; BENCHMARKS.md has the figures).

Pure functions of their inputs: tested without a server or a clock.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

MEDIAN, TAIL = 0.5, 0.99


@dataclass(frozen=True, slots=True)
class GuardLimits:
    max_error_ratio: float = 2.0  # candidate error rate <= this x the baseline's...
    error_slack: float = 0.01  # ...or the baseline's plus this (absolute), whichever is larger
    max_p99_ratio: float = 1.5  # candidate p99 <= this x the baseline's (and the median the same)...
    min_samples: int = 20  # requests each side before the guard judges
    # output divergence: mirror this percent of the baseline's requests to the
    # candidate, and require their outputs to agree on at least min_agreement of them
    mirror_percent: float = 0.0
    min_agreement: float | None = None
    latency_slack_ms: float = 1.0  # ...or the baseline's plus this, whichever is larger
    confidence: float = 0.999  # of each bound, at each look


@dataclass(frozen=True, slots=True)
class Window:
    """One variant's requests in a window: counts, and its median and p99
    latencies with confidence bounds (None: too few samples to say)."""

    requests: int
    errors: int
    p99_seconds: float | None  # None: no successful request yet
    p99_low: float | None = None  # the true p99 is at least this...
    p99_high: float | None = None  # ...and at most this
    p50_seconds: float | None = None
    p50_low: float | None = None
    p50_high: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Divergence:
    """The baseline's requests mirrored to the candidate in the current window."""

    compared: int
    agreeing: int

    @property
    def agreement(self) -> float:
        return self.agreeing / self.compared if self.compared else 1.0


def summarise(requests: int, errors: int, latencies: Sequence[float], confidence: float) -> Window:
    """A window from its counts and its successful requests' latencies (a sample of them)."""
    if not latencies:
        return Window(requests, errors, None)
    ordered = sorted(latencies)
    n = len(ordered)

    def at(index: int | None) -> float | None:
        return None if index is None else ordered[index]

    p50_low, p50_high = quantile_bounds(n, MEDIAN, confidence)
    p99_low, p99_high = quantile_bounds(n, TAIL, confidence)
    return Window(
        requests,
        errors,
        ordered[max(0, math.ceil(TAIL * n) - 1)],  # nearest rank
        at(p99_low),
        at(p99_high),
        ordered[max(0, math.ceil(MEDIAN * n) - 1)],
        at(p50_low),
        at(p50_high),
    )


@functools.lru_cache(maxsize=4096)
def quantile_bounds(n: int, q: float, confidence: float) -> tuple[int | None, int | None]:
    """0-based indices into ``n`` sorted samples of a lower and an upper
    ``confidence`` bound on the ``q`` quantile; None where ``n`` is too small.

    The k-th smallest sample (1-based) is at most the quantile with the
    probability that at least k of n samples fall under it, P(Bin(n, q) >= k);
    at least the quantile with P(Bin(n, q) <= k - 1). Exact sums where the
    binomial is skewed, its normal approximation (with continuity correction)
    only where it is not: for p99 from 2,500 samples (variance 25) the
    approximation gave the lower bound 0.9986 coverage instead of 0.999.
    """
    if n < 1:
        return None, None
    if min(n * q, n * (1 - q)) >= 100:  # a binomial near symmetric: for p99, only past 10,000 samples
        spread = NormalDist().inv_cdf(confidence) * math.sqrt(n * q * (1 - q))
        k_low = math.floor(n * q - spread + 0.5)
        k_high = math.ceil(n * q + spread + 0.5)
        return (k_low - 1 if k_low >= 1 else None), (k_high - 1 if k_high <= n else None)
    alpha = 1.0 - confidence
    # both walk down from the top, where the mass of Bin(n, 0.99) lies: a few dozen terms
    # lower: the largest k with P(Bin >= k) >= confidence
    tail, k, lower = 0.0, n, None
    while k >= 1:
        tail += _binomial(n, k, q)
        if tail >= confidence:
            lower = k - 1  # the k-th smallest, 0-based
            break
        k -= 1
    # upper: the smallest k with P(Bin >= k) <= alpha (so P(Bin <= k - 1) >= confidence)
    tail, k = 0.0, n + 1
    while k > 1:
        preceding = tail + _binomial(n, k - 1, q)
        if preceding > alpha:
            break
        tail, k = preceding, k - 1
    upper = k - 1 if k <= n else None
    return lower, upper


def _binomial(n: int, k: int, p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return float(k == (n if p >= 1.0 else 0))
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
    return math.exp(log + (n - k) * math.log1p(-p))


def wilson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson score bounds, each at ``confidence``, on a rate seen as ``successes`` in ``trials``."""
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(confidence)
    rate = successes / trials
    spread = z * z / trials
    centre = (rate + spread / 2) / (1 + spread)
    half = z / (1 + spread) * math.sqrt(rate * (1 - rate) / trials + spread / (4 * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def worse_errors(baseline: Window, candidate: Window, limits: GuardLimits) -> str | None:
    """Why the candidate's error rate is above what the baseline's allows, with
    confidence; None if it is not shown to be. A baseline with no requests (a
    100% step with nothing to compare) allows ``error_slack`` alone.

    The allowance is an excess over the baseline's rate: ``error_slack``, or
    (``max_error_ratio`` - 1) times the baseline's rate where that is larger.
    The excess is bounded below by Newcombe's hybrid score interval for a
    difference of two rates (Wilson bounds of each side, combined), so a
    baseline whose few requests happen to show no error allows no less.
    """
    if candidate.requests < limits.min_samples:
        return None
    confidence = limits.confidence
    c_low, _ = wilson(candidate.errors, candidate.requests, confidence)
    rate_c, rate_b = candidate.error_rate, baseline.error_rate
    if baseline.requests:
        _, b_high = wilson(baseline.errors, baseline.requests, confidence)
        excess_low = rate_c - rate_b - math.hypot(rate_c - c_low, b_high - rate_b)
    else:
        excess_low = c_low
    allowed = max((limits.max_error_ratio - 1.0) * rate_b, limits.error_slack)
    if excess_low > allowed:
        return (
            f"error rate {rate_c:.1%} against the baseline's {rate_b:.1%}: at least {excess_low:.1%} more "
            f"(allowed {allowed:.1%} more)"
        )
    return None


def slower(baseline: Window, candidate: Window, limits: GuardLimits) -> str | None:
    """Why the candidate's median or p99 latency is above what the baseline's
    allows, with confidence; None if neither is shown to be (or either side
    has too few samples)."""
    if candidate.requests < limits.min_samples or baseline.requests < limits.min_samples:
        return None
    return _slower("median", candidate.p50_seconds, candidate.p50_low, baseline.p50_seconds, baseline.p50_high,
                   limits) or _slower("p99", candidate.p99_seconds, candidate.p99_low, baseline.p99_seconds,
                                      baseline.p99_high, limits)  # fmt: skip


def _slower(
    name: str,
    candidate: float | None,
    candidate_low: float | None,
    baseline: float | None,
    baseline_high: float | None,
    limits: GuardLimits,
) -> str | None:
    # Not judged until the baseline has an upper bound: for p99, some 690 successful requests
    # at 0.999. Its raw estimate from fewer, its largest sample or near it, looked safe and
    # was not: a baseline that saw no pause of the process yet rolled back 0.45% of
    # identical candidates in simulation.
    ceiling = baseline_high
    if candidate_low is None or ceiling is None:
        return None
    allowed = max(ceiling * limits.max_p99_ratio, ceiling + limits.latency_slack_ms / 1000.0)
    if candidate_low <= allowed:
        return None
    return (
        f"{name} {_ms(candidate)} ms (at least {_ms(candidate_low)} ms) against the baseline's "
        f"{_ms(baseline)} ms (bound {_ms(ceiling)} ms; allowed {_ms(allowed)} ms)"
    )


def diverged(divergence: Divergence | None, limits: GuardLimits) -> str | None:
    if (
        limits.min_agreement is not None
        and divergence is not None
        and divergence.compared >= limits.min_samples
        and divergence.agreement < limits.min_agreement
    ):
        return (
            f"outputs agree on {divergence.agreement:.1%} of {divergence.compared} mirrored requests "
            f"(at least {limits.min_agreement:.1%} required)"
        )
    return None


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.2f}"
