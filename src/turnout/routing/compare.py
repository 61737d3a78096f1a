"""Comparing a shadow variant's outputs with the primary's, request by request.

Per output: classification-like outputs (integers, booleans, strings: labels)
agree when equal element by element; numeric ones (floats) are compared by
absolute and relative difference, and agree within a tolerance. A request
agrees when all the outputs both sides returned agree. ``ShadowStats`` sums
what the metrics export (agreement rate, difference statistics, latency
difference) and says which disagreements to log, sampled. Pure numpy and
arithmetic; the caller runs the shadow and writes the log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Outputs = Mapping[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class Tolerance:
    absolute: float = 1e-5
    relative: float = 1e-3


@dataclass(frozen=True, slots=True)
class OutputDifference:
    name: str
    kind: str  # "label" or "numeric"
    agrees: bool
    max_abs: float = 0.0  # numeric only
    max_rel: float = 0.0
    mismatched: int = 0  # elements that differ (labels) or exceed the tolerance (numeric)
    size: int = 0


@dataclass(frozen=True, slots=True)
class RequestComparison:
    outputs: tuple[OutputDifference, ...]
    missing: tuple[str, ...]  # outputs one side returned and the other did not, or of another shape

    @property
    def agrees(self) -> bool:
        return not self.missing and all(o.agrees for o in self.outputs)


def compare(primary: Outputs, shadow: Outputs, tolerance: Tolerance = Tolerance()) -> RequestComparison:
    differences = []
    missing = []
    for name in sorted(set(primary) | set(shadow)):
        if name not in primary or name not in shadow:
            missing.append(name)
            continue
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.shape != b.shape:
            missing.append(name)
            continue
        differences.append(_compare_one(name, a, b, tolerance))
    return RequestComparison(tuple(differences), tuple(missing))


def _compare_one(name: str, a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], tolerance: Tolerance) -> OutputDifference:
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        both_nan = np.isnan(a64) & np.isnan(b64)
        gap = np.where(both_nan, 0.0, np.abs(a64 - b64))
        gap = np.where(np.isnan(gap), np.inf, gap)  # one side NaN: as far apart as can be
        scale = np.fmax(np.abs(a64), np.abs(b64))  # fmax: a NaN on one side does not hide the other
        relative = np.divide(gap, scale, out=np.zeros_like(gap), where=scale > 0)
        outside = gap > tolerance.absolute + tolerance.relative * scale
        mismatched = int(np.count_nonzero(outside))
        return OutputDifference(
            name,
            "numeric",
            mismatched == 0,
            float(gap.max(initial=0.0)),
            float(relative.max(initial=0.0)),
            mismatched,
            int(a.size),
        )
    mismatched = int(np.count_nonzero(a != b))
    return OutputDifference(name, "label", mismatched == 0, mismatched=mismatched, size=int(a.size))


@dataclass(slots=True)
class ShadowStats:
    """Running totals for one (endpoint, shadow variant). Not thread-safe: event loop only."""

    sample_every: int = 100  # log one disagreement in this many
    requests: int = 0
    agreeing: int = 0
    dropped: int = 0  # shadow copies not run: the shadow queue was full
    max_abs: dict[str, float] = field(default_factory=dict)
    sum_abs: dict[str, float] = field(default_factory=dict)  # of each request's max, for the mean
    max_rel: dict[str, float] = field(default_factory=dict)
    latency_difference_sum: float = 0.0  # shadow minus primary, seconds
    disagreements: int = 0
    # per output: a label output's agreement is the classification agreement rate
    output_compared: dict[str, int] = field(default_factory=dict)
    output_agreeing: dict[str, int] = field(default_factory=dict)

    def record(self, result: RequestComparison, primary_seconds: float, shadow_seconds: float) -> bool:
        """Count one compared request; True when this disagreement should be logged."""
        self.requests += 1
        self.latency_difference_sum += shadow_seconds - primary_seconds
        for output in result.outputs:
            self.output_compared[output.name] = self.output_compared.get(output.name, 0) + 1
            self.output_agreeing[output.name] = self.output_agreeing.get(output.name, 0) + output.agrees
            if output.kind == "numeric":
                self.max_abs[output.name] = max(self.max_abs.get(output.name, 0.0), output.max_abs)
                self.sum_abs[output.name] = self.sum_abs.get(output.name, 0.0) + output.max_abs
                self.max_rel[output.name] = max(self.max_rel.get(output.name, 0.0), output.max_rel)
        if result.agrees:
            self.agreeing += 1
            return False
        self.disagreements += 1
        return (self.disagreements - 1) % self.sample_every == 0

    @property
    def agreement_rate(self) -> float:
        return self.agreeing / self.requests if self.requests else math.nan

    @property
    def mean_latency_difference(self) -> float:
        return self.latency_difference_sum / self.requests if self.requests else math.nan

    def output_agreement(self, output: str) -> float:
        compared = self.output_compared.get(output, 0)
        return self.output_agreeing.get(output, 0) / compared if compared else math.nan

    def mean_abs(self, output: str) -> float:
        return self.sum_abs.get(output, 0.0) / self.requests if self.requests else math.nan
