"""A/B statistics against scipy's on the same data."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from turnout.routing.abstats import compare_means, compare_proportions


@pytest.mark.parametrize(
    ("sa", "na", "sb", "nb"), [(120, 1000, 150, 1000), (5, 60, 9, 55), (480, 500, 470, 500), (0, 100, 3, 100)]
)
def test_two_proportions_match_scipy(sa: int, na: int, sb: int, nb: int) -> None:
    result = compare_proportions(sa, na, sb, nb)
    assert result.enough and result.difference == pytest.approx(sb / nb - sa / na)
    # scipy's z-test: a chi-square test of the 2x2 table without continuity correction is its square
    _, p_value, _, _ = stats.chi2_contingency([[sa, na - sa], [sb, nb - sb]], correction=False)
    assert result.p_value == pytest.approx(p_value, rel=1e-6)
    se = math.sqrt(sa / na * (1 - sa / na) / na + sb / nb * (1 - sb / nb) / nb)
    z = stats.norm.ppf(0.975)
    assert result.ci_low == pytest.approx(result.difference - z * se, rel=1e-9, abs=1e-12)
    assert result.ci_high == pytest.approx(result.difference + z * se, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_welch_matches_scipy(seed: int) -> None:
    rng = random.Random(seed)
    a = [rng.gauss(1.0, 0.5) for _ in range(rng.randint(30, 200))]
    b = [rng.gauss(1.1 + seed * 0.05, 1.5) for _ in range(rng.randint(30, 300))]
    result = compare_means(a, b)
    reference = stats.ttest_ind(b, a, equal_var=False)
    assert result.enough
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-6)
    low, high = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))


def test_below_the_minimum_sample_there_is_no_verdict() -> None:
    small = compare_proportions(3, 10, 5, 10, min_count=30)
    assert not small.enough and small.p_value is None and small.mean_b == 0.5
    assert not compare_means([1.0] * 29, [2.0] * 40).enough


def test_edge_cases() -> None:
    assert compare_proportions(0, 100, 0, 100).p_value == 1.0  # nothing converts on either side
    assert compare_means([2.0] * 40, [2.0] * 40).p_value == 1.0
    assert compare_means([2.0] * 40, [3.0] * 40).p_value == 0.0
    with pytest.raises(ValueError, match="11 successes out of 10"):
        compare_proportions(11, 10, 1, 10)
