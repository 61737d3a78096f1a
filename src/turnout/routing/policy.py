"""Routing policies as frozen values, checked when made.

An endpoint (the model name clients call) routes to variants (versions of
that model, or other models with a compatible signature) under one policy.
The policies only name variants; what a variant is (a model and version)
and whether their signatures are compatible is checked by whoever resolves
the names (the registry), since that needs the loaded models.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# the key is read from an HTTP header, gRPC metadata or a request parameter of this name
_KEY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class PolicyError(ValueError):
    """A policy that cannot be applied; the message says what to change."""


def _percent(value: float, what: str) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise PolicyError(f"{what} must be a percentage from 0 to 100, got {value!r}")


def _distinct(names: tuple[str, ...]) -> None:
    for name in names:
        if not name:
            raise PolicyError("a variant needs a name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PolicyError(f"variant(s) {repeated} named more than once")


@dataclass(frozen=True, slots=True)
class Single:
    """No policy: one variant serves everything."""

    variant: str

    def __post_init__(self) -> None:
        _distinct((self.variant,))

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.variant,)


@dataclass(frozen=True, slots=True)
class Canary:
    """``weight`` percent of requests to the candidate, the rest to the baseline."""

    baseline: str
    candidate: str
    weight: float

    def __post_init__(self) -> None:
        _distinct((self.baseline, self.candidate))
        _percent(self.weight, "the canary weight")

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.baseline, self.candidate)


@dataclass(frozen=True, slots=True)
class BlueGreen:
    """Both loaded; ``live`` (one of the two) takes all requests."""

    blue: str
    green: str
    live: str

    def __post_init__(self) -> None:
        _distinct((self.blue, self.green))
        if self.live not in (self.blue, self.green):
            raise PolicyError(
                f"the live variant {self.live!r} is neither blue ({self.blue!r}) nor green ({self.green!r})"
            )

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.blue, self.green)


@dataclass(frozen=True, slots=True)
class Shadow:
    """The primary answers; ``percent`` of requests are also mirrored to the shadow."""

    primary: str
    shadow: str
    percent: float

    def __post_init__(self) -> None:
        _distinct((self.primary, self.shadow))
        _percent(self.percent, "the shadow percentage")

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.primary, self.shadow)


@dataclass(frozen=True, slots=True)
class ABTest:
    """Variants with weights (percent, summing to 100). A request carrying the
    assignment key (the HTTP header, gRPC metadata or V2 request parameter
    named ``key``) always gets the same variant while the weights stay; one
    without is split at random."""

    weights: tuple[tuple[str, float], ...]
    key: str = "user-id"

    def __post_init__(self) -> None:
        if len(self.weights) < 2:
            raise PolicyError("an A/B test needs at least two variants")
        _distinct(tuple(name for name, _ in self.weights))
        for name, weight in self.weights:
            _percent(weight, f"the weight of {name!r}")
        total = math.fsum(weight for _, weight in self.weights)
        if abs(total - 100.0) > 1e-9:
            raise PolicyError(f"A/B weights must sum to 100, these sum to {total:g}")
        if not _KEY_NAME.fullmatch(self.key):
            raise PolicyError(
                f"the A/B assignment key {self.key[:80]!r} must be a header name: 1 to 64 letters, digits, '-' or '_'"
            )

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)


Policy = Single | Canary | BlueGreen | Shadow | ABTest


def check_variants(policy: Policy, known: set[str]) -> None:
    """Every variant the policy names must be one the endpoint has."""
    unknown = [name for name in policy.variants if name not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise PolicyError(f"unknown variant(s) {unknown}; this endpoint has: {listed}")
