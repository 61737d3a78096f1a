"""Shadow comparison on outputs whose differences are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from turnout.routing.compare import ShadowStats, Tolerance, compare


def test_labels_agree_when_equal_and_count_the_elements_that_differ() -> None:
    same = compare({"label": np.array([0, 1, 1])}, {"label": np.array([0, 1, 1])})
    assert same.agrees and same.outputs[0].kind == "label"
    differ = compare({"label": np.array([0, 1, 1, 0])}, {"label": np.array([0, 0, 1, 1])})
    assert not differ.agrees and differ.outputs[0].mismatched == 2 and differ.outputs[0].size == 4
    text = compare({"tag": np.array([b"cat", b"dog"], dtype=object)}, {"tag": np.array([b"cat", b"cow"], dtype=object)})
    assert not text.agrees and text.outputs[0].mismatched == 1


def test_numbers_agree_within_the_tolerance_and_report_their_differences() -> None:
    primary = {"p": np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)}
    close = compare(primary, {"p": primary["p"] + np.float32(1e-7)})
    assert close.agrees
    far = compare(primary, {"p": np.array([[0.2, 0.8], [0.4, 0.6]], dtype=np.float32)}, Tolerance(1e-5, 1e-3))
    (output,) = far.outputs
    assert not far.agrees and output.kind == "numeric" and output.mismatched == 2
    assert math.isclose(output.max_abs, 0.1, rel_tol=1e-6)
    assert math.isclose(output.max_rel, 0.1 / 0.5, rel_tol=1e-6)


def test_nan_agrees_only_with_nan() -> None:
    assert compare({"x": np.array([np.nan, 1.0])}, {"x": np.array([np.nan, 1.0])}).agrees
    one_sided = compare({"x": np.array([np.nan])}, {"x": np.array([1.0])})
    assert not one_sided.agrees and one_sided.outputs[0].max_abs == math.inf


def test_missing_or_reshaped_outputs_disagree() -> None:
    assert compare({"a": np.zeros(2), "b": np.zeros(1)}, {"a": np.zeros(2)}).missing == ("b",)
    assert not compare({"a": np.zeros(2)}, {"a": np.zeros((2, 1))}).agrees


def test_stats_count_agreement_latency_and_sample_the_log() -> None:
    """Two versions known to differ on every third request."""
    stats = ShadowStats(sample_every=2)
    logged = []
    for n in range(30):
        shadow_label = 1 if n % 3 == 0 else 0
        result = compare(
            {"label": np.array([0]), "p": np.array([0.5])},
            {"label": np.array([shadow_label]), "p": np.array([0.5 + n * 1e-3])},
        )
        if stats.record(result, primary_seconds=0.010, shadow_seconds=0.013):
            logged.append(n)
    assert stats.requests == 30 and stats.disagreements >= 10
    label_disagreements = 10  # n = 0, 3, ..., 27
    numeric_disagreements = sum(1 for n in range(30) if n * 1e-3 > 1e-5 + 1e-3 * (0.5 + n * 1e-3) and n % 3 != 0)
    assert stats.disagreements == label_disagreements + numeric_disagreements
    assert stats.agreement_rate == (30 - stats.disagreements) / 30
    assert math.isclose(stats.mean_latency_difference, 0.003)
    assert math.isclose(stats.max_abs["p"], 0.029, rel_tol=1e-9)
    assert len(logged) == math.ceil(stats.disagreements / 2)  # one in two logged


def test_each_output_has_its_own_agreement_rate() -> None:
    stats = ShadowStats()
    primary = {"label": np.array([1, 0]), "p": np.array([0.9, 0.2], dtype=np.float32)}
    same_label = {"label": np.array([1, 0]), "p": np.array([0.8, 0.3], dtype=np.float32)}
    other_label = {"label": np.array([1, 1]), "p": np.array([0.9, 0.2], dtype=np.float32)}
    for shadow in (same_label, same_label, same_label, other_label):
        stats.record(compare(primary, shadow), 0.001, 0.002)
    assert stats.output_agreement("label") == 0.75  # the classification agreement
    assert stats.output_agreement("p") == 0.25
    assert stats.agreement_rate == 0.0  # no request agreed on both outputs
    assert math.isnan(stats.output_agreement("missing"))


def test_relative_differences_are_tracked_per_numeric_output() -> None:
    stats = ShadowStats()
    primary = {"p": np.array([1.0, 4.0], dtype=np.float32)}
    stats.record(compare(primary, {"p": np.array([1.0, 5.0], dtype=np.float32)}), 0.001, 0.001)
    stats.record(compare(primary, {"p": np.array([1.5, 4.0], dtype=np.float32)}), 0.001, 0.001)
    assert stats.max_rel == {"p": pytest.approx(1 / 3)}  # |1.5 - 1| / 1.5
    assert stats.max_abs == {"p": 1.0}
