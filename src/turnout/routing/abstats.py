"""A/B test statistics: is variant B's outcome different from A's?

- 0/1 outcomes (conversions): the two-proportion z-test (pooled standard
  error for the p-value, unpooled for the confidence interval of B - A).
- numeric outcomes (rewards): Welch's t-test (unequal variances, the
  Welch-Satterthwaite degrees of freedom).

Pure Python on purpose: scipy is a heavy dependency for two distribution
functions. Student's t distribution comes from the regularised incomplete
beta function (Lentz's continued fraction); the tests check every number
against scipy on the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Comparison:
    """B against A. ``enough`` False: below the minimum sample, the rest is None."""

    test: str  # "two-proportion z-test" or "Welch's t-test"
    count_a: int
    count_b: int
    mean_a: float
    mean_b: float
    enough: bool
    difference: float | None = None  # mean_b - mean_a
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None


def compare_proportions(
    successes_a: int, count_a: int, successes_b: int, count_b: int, min_count: int = 30
) -> Comparison:
    for successes, count in ((successes_a, count_a), (successes_b, count_b)):
        if not 0 <= successes <= count:
            raise ValueError(f"{successes} successes out of {count} trials")
    rate_a = successes_a / count_a if count_a else 0.0
    rate_b = successes_b / count_b if count_b else 0.0
    name = "two-proportion z-test"
    if min(count_a, count_b) < max(min_count, 1):
        return Comparison(name, count_a, count_b, rate_a, rate_b, enough=False)
    difference = rate_b - rate_a
    pooled = (successes_a + successes_b) / (count_a + count_b)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / count_a + 1 / count_b))
    p_value = 1.0 if pooled_se == 0 else 2 * _normal_sf(abs(difference) / pooled_se)
    se = math.sqrt(rate_a * (1 - rate_a) / count_a + rate_b * (1 - rate_b) / count_b)
    margin = _normal_quantile(0.5 + CONFIDENCE / 2) * se
    return Comparison(
        name, count_a, count_b, rate_a, rate_b, True, difference, difference - margin, difference + margin, p_value
    )


def compare_means(a: Sequence[float], b: Sequence[float], min_count: int = 30) -> Comparison:
    name = "Welch's t-test"
    mean_a = math.fsum(a) / len(a) if a else 0.0
    mean_b = math.fsum(b) / len(b) if b else 0.0
    if min(len(a), len(b)) < max(min_count, 2):
        return Comparison(name, len(a), len(b), mean_a, mean_b, enough=False)
    var_a = math.fsum((x - mean_a) ** 2 for x in a) / (len(a) - 1)
    var_b = math.fsum((x - mean_b) ** 2 for x in b) / (len(b) - 1)
    share_a, share_b = var_a / len(a), var_b / len(b)
    se = math.sqrt(share_a + share_b)
    difference = mean_b - mean_a
    if se == 0:  # both constant: equal means are no difference, different ones are certain
        p_value = 1.0 if difference == 0 else 0.0
        return Comparison(name, len(a), len(b), mean_a, mean_b, True, difference, difference, difference, p_value)
    df = (share_a + share_b) ** 2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))
    p_value = 2 * _t_sf(abs(difference) / se, df)
    margin = _t_quantile(0.5 + CONFIDENCE / 2, df) * se
    return Comparison(
        name, len(a), len(b), mean_a, mean_b, True, difference, difference - margin, difference + margin, p_value
    )


# ---------------------------------------------------------------- distributions


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _normal_quantile(p: float) -> float:
    return _bisect(lambda z: 1 - _normal_sf(z), p, -40.0, 40.0)


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for t >= 0."""
    return 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))


def _t_quantile(p: float, df: float) -> float:
    return _bisect(lambda t: 1 - _t_sf(t, df), p, 0.0, 1e6)


def _bisect(cdf: Callable[[float], float], p: float, low: float, high: float) -> float:
    """The x where ``cdf`` (increasing) reaches ``p``, to float precision."""
    for _ in range(200):
        middle = (low + high) / 2
        if cdf(middle) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return result
