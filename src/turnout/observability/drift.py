"""Input and prediction drift against a reference profile. Pure numpy.

A **profile** (made from the training data by ``turnout profile``) holds, for
each input feature, bin edges at the reference's deciles and the share of the
reference in each bin; and the same for the predictions (bins for numbers,
one bin per class for labels). Live requests are counted into the same bins,
window by window (``window_rows``); at the end of a window each feature and
the predictions get:

- **PSI**, the population stability index: sum of (live - ref) * ln(live / ref)
  over the bins (shares smoothed by a small epsilon, so an empty bin is not
  infinite). Rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 drift.
- **KS**, the Kolmogorov-Smirnov statistic on the binned distributions: the
  largest gap between the two cumulative shares at the bin edges.

Only tabular models are profiled: one 2-D input (rows x features).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_FILE = "profile.json"
BINS = 10
EPSILON = 1e-4


@dataclass(frozen=True, slots=True)
class Distribution:
    """A reference distribution: inner bin edges (numbers) or classes (labels), and shares."""

    edges: tuple[float, ...]  # inner edges, ascending; bins are (-inf, e0], (e0, e1], ..., (e_last, inf)
    shares: tuple[float, ...]
    classes: tuple[int, ...] = ()  # labels: one bin per class, plus one for classes never seen

    def counts(self, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self.classes:
            classes = np.asarray(self.classes)
            index = np.minimum(np.searchsorted(classes, values), len(classes) - 1)
            index = np.where(classes[index] == values, index, len(classes))  # unseen classes: the last bin
            return np.bincount(index.astype(np.int64), minlength=len(classes) + 1)
        index = np.searchsorted(np.asarray(self.edges), values, side="left")
        return np.bincount(index, minlength=len(self.edges) + 1)

    def as_dict(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "shares": list(self.shares), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Distribution:
        return cls(tuple(document["edges"]), tuple(document["shares"]), tuple(document.get("classes", ())))


def numeric(values: np.ndarray[Any, Any], bins: int = BINS) -> Distribution:
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    edges = tuple(float(e) for e in np.unique(quantiles))
    shell = Distribution(edges, ())
    counts = shell.counts(values)
    return Distribution(edges, tuple(float(c) for c in counts / counts.sum()))


def categorical(values: np.ndarray[Any, Any]) -> Distribution:
    classes = tuple(int(c) for c in np.unique(values))
    shell = Distribution((), (), classes)
    counts = shell.counts(values)
    return Distribution((), tuple(float(c) for c in counts / counts.sum()), classes)  # last share: unseen


def psi(reference: tuple[float, ...], counts: np.ndarray[Any, Any]) -> float:
    live = counts / max(counts.sum(), 1)
    ref = np.asarray(reference)
    live, ref = np.maximum(live, EPSILON), np.maximum(ref, EPSILON)
    return float(np.sum((live - ref) * np.log(live / ref)))


def ks(reference: tuple[float, ...], counts: np.ndarray[Any, Any]) -> float:
    live = np.cumsum(counts / max(counts.sum(), 1))
    return float(np.max(np.abs(live - np.cumsum(np.asarray(reference)))))


@dataclass(frozen=True, slots=True)
class Profile:
    input_name: str
    features: tuple[str, ...]
    inputs: tuple[Distribution, ...]  # one per feature
    output_name: str
    prediction: Distribution
    rows: int  # the reference's size

    def report(self, window: WindowRows) -> DriftReport:
        """PSI and KS of a window's rows against this profile (vectorised: call it off the event loop)."""
        rows = np.concatenate([x for x, _ in window.requests])
        flat = np.concatenate([p.reshape(len(p), -1)[:, 0] if p.ndim > 1 else p for _, p in window.requests])
        features, shares = {}, {}
        for i, (name, distribution) in enumerate(zip(self.features, self.inputs, strict=True)):
            counts = distribution.counts(rows[:, i])
            features[name] = {"psi": psi(distribution.shares, counts), "ks": ks(distribution.shares, counts)}
            shares[name] = [float(c) for c in counts / max(counts.sum(), 1)]
        counts = self.prediction.counts(flat)
        prediction = {"psi": psi(self.prediction.shares, counts), "ks": ks(self.prediction.shares, counts)}
        return DriftReport(len(rows), features, prediction, shares)

    def save(self, path: Path) -> None:
        document = {
            "input": self.input_name,
            "features": list(self.features),
            "inputs": [d.as_dict() for d in self.inputs],
            "output": self.output_name,
            "prediction": self.prediction.as_dict(),
            "rows": self.rows,
        }
        path.write_text(json.dumps(document, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Profile:
        document = json.loads(path.read_text())
        return cls(
            document["input"],
            tuple(document["features"]),
            tuple(Distribution.from_dict(d) for d in document["inputs"]),
            document["output"],
            Distribution.from_dict(document["prediction"]),
            int(document["rows"]),
        )


def make_profile(
    data: np.ndarray[Any, Any],
    predictions: np.ndarray[Any, Any],
    input_name: str,
    output_name: str,
    features: tuple[str, ...] | None = None,
) -> Profile:
    """The reference profile of ``data`` (rows x features) and the model's ``predictions`` of it."""
    if data.ndim != 2:
        raise ValueError(f"a profile needs rows x features, got shape {data.shape}")
    names = features or tuple(f"f{i}" for i in range(data.shape[1]))
    flat = predictions.reshape(len(predictions), -1)[:, 0] if predictions.ndim > 1 else predictions
    prediction = categorical(flat) if flat.dtype.kind in "iub" else numeric(flat.astype(np.float64))
    return Profile(
        input_name,
        names,
        tuple(numeric(data[:, i].astype(np.float64)) for i in range(data.shape[1])),
        output_name,
        prediction,
        len(data),
    )


@dataclass(frozen=True, slots=True)
class DriftReport:
    rows: int
    features: dict[str, dict[str, float]]  # feature -> {"psi": .., "ks": ..}
    prediction: dict[str, float]
    live_shares: dict[str, list[float]] = field(default_factory=dict)  # feature -> the window's share per bin


@dataclass(slots=True)
class DriftWindow:
    """Live rows for one window; ``add`` returns the report when a window completes.

    Rows are kept as they come (a list append per request, on the request
    path) and binned all at once when the window is full: a vectorised pass
    over a thousand rows costs less than a thousand small ones.
    """

    profile: Profile
    window_rows: int = 1000
    rows: int = 0
    pending: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = field(default_factory=list)

    def add(self, inputs: np.ndarray[Any, Any], predictions: np.ndarray[Any, Any]) -> WindowRows | None:
        """Keep a request's rows; the window's rows when it is full (then ``profile.report`` them)."""
        if (
            inputs.ndim != 2
            or inputs.shape[1] != len(self.profile.inputs)
            or predictions.ndim == 0
            or len(predictions) != len(inputs)
        ):
            return None  # not the profiled layout: nothing to compare
        self.pending.append((inputs, predictions))
        self.rows += len(inputs)
        if self.rows < self.window_rows:
            return None
        pending, self.rows, self.pending = self.pending, 0, []
        return WindowRows(tuple(pending))


@dataclass(frozen=True, slots=True)
class WindowRows:
    """A full window's requests, as they came."""

    requests: tuple[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]], ...]
