"""Drift statistics on real data (scikit-learn's breast-cancer set): the
held-out half of the data does not drift from the training half; one
feature scaled by 2 drifts, alone; predictions' classes are counted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from turnout.observability.drift import DriftWindow, Profile, categorical, ks, make_profile, numeric, psi

DATA = load_breast_cancer()
TRAIN, LIVE, Y_TRAIN, Y_LIVE = train_test_split(
    DATA.data, DATA.target, test_size=0.5, random_state=0, stratify=DATA.target
)


def test_psi_and_ks_by_hand() -> None:
    reference = (0.5, 0.5)
    assert psi(reference, np.array([50, 50])) == 0.0 and ks(reference, np.array([50, 50])) == 0.0
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert abs(psi(reference, np.array([80, 20])) - expected) < 1e-12
    assert abs(ks(reference, np.array([80, 20])) - 0.3) < 1e-12


def test_deciles_and_classes() -> None:
    values = np.arange(1000, dtype=np.float64)
    distribution = numeric(values)
    assert len(distribution.edges) == 9 and all(abs(s - 0.1) < 0.002 for s in distribution.shares)
    labels = categorical(np.array([0, 0, 1, 2, 2, 2]))
    assert labels.classes == (0, 1, 2) and labels.counts(np.array([2, 7, 0])).tolist() == [1, 0, 1, 1]


def test_held_out_data_does_not_drift_and_a_scaled_feature_does(tmp_path: Path) -> None:
    profile = make_profile(TRAIN, Y_TRAIN, "input", "label", tuple(DATA.feature_names))
    profile.save(tmp_path / "profile.json")
    profile = Profile.load(tmp_path / "profile.json")
    full = DriftWindow(profile, window_rows=len(LIVE)).add(LIVE, Y_LIVE)
    assert full is not None
    steady = profile.report(full)
    assert steady.rows == len(LIVE)
    assert max(stats["psi"] for stats in steady.features.values()) < 0.2
    assert steady.prediction["psi"] < 0.05
    shifted = LIVE.copy()
    shifted[:, 0] *= 2  # "mean radius" doubled
    window = DriftWindow(profile, window_rows=len(LIVE))
    for start in range(0, len(shifted), 50):  # row batches, as requests bring them
        rows = window.add(shifted[start : start + 50], Y_LIVE[start : start + 50])
        assert (rows is None) == (start + 50 < len(shifted))  # only the last request completes the window
    assert rows is not None
    report = profile.report(rows)
    assert report.features["mean radius"]["psi"] > 1.0 and report.features["mean radius"]["ks"] > 0.5
    others = {name: s["psi"] for name, s in report.features.items() if name != "mean radius"}
    assert max(others.values()) < 0.2
    assert DriftWindow(profile).add(LIVE[:, :5], Y_LIVE) is None  # not the profiled layout


def test_slo_windows_give_p99_and_error_rate() -> None:
    from turnout.observability.slo import SloWindow

    window = SloWindow(size=100)
    verdicts = [window.add(None if i % 10 == 0 else (i % 100) / 1000) for i in range(100)]
    assert verdicts[:-1] == [None] * 99
    final = verdicts[-1]
    assert final is not None and final.requests == 100 and final.error_rate == 0.1
    assert final.p99_seconds == 0.099  # nearest rank over the 90 answered
    assert window.add(0.001) is None  # a new window
