"""A routing policy as a document: the ``[routing]`` table of ``model.toml``
and the JSON body of the admin API share this one schema, so what an
operator writes in either place means the same.

    policy = "canary"            # "single", "canary", "blue_green", "shadow" or "ab"
    baseline = "1"               # variants: a version of this model ("2"),
    candidate = "2"              # another model ("fraud_v2") or one of its versions ("fraud_v2:3")
    weight = 10                  # percent to the candidate
    [[routing.steps]]            # optional: a progressive rollout instead of a fixed weight
    weight = 25
    hold_seconds = 60
    min_requests = 200
    [routing.guard]              # optional: what a rollout step must stay within
    max_error_ratio = 2.0

Parsing checks the shape (unknown fields, types); ``to_policy`` builds the
policy value, which checks the rules (weights, distinct variants).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turnout.errors import ConfigError
from turnout.model.config import field_path
from turnout.routing.guard import GuardLimits
from turnout.routing.policy import ABTest, BlueGreen, Canary, Policy, PolicyError, Shadow, Single
from turnout.routing.rollout import Rollout, Step


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# TOML and JSON both write 10 for 10.0; a whole number is a fine percentage
Number = Annotated[float, Field(strict=False)]


class StepDocument(_Strict):
    weight: Number
    hold_seconds: Number | None = None
    min_requests: int | None = None

    def to_step(self) -> Step:
        return Step(self.weight, self.hold_seconds, self.min_requests)


_DEFAULT_GUARD = GuardLimits()


class GuardDocument(_Strict):
    max_error_ratio: Number = _DEFAULT_GUARD.max_error_ratio
    error_slack: Number = _DEFAULT_GUARD.error_slack
    max_p99_ratio: Number = _DEFAULT_GUARD.max_p99_ratio
    min_samples: int = _DEFAULT_GUARD.min_samples
    mirror_percent: Number = 0.0
    min_agreement: Number | None = None
    latency_slack_ms: Number = _DEFAULT_GUARD.latency_slack_ms
    confidence: Number = _DEFAULT_GUARD.confidence

    def to_limits(self) -> GuardLimits:
        if min(self.max_error_ratio, self.max_p99_ratio) < 1.0:
            raise PolicyError("guard ratios must be at least 1 (the candidate may be as good as the baseline)")
        if self.error_slack < 0 or self.latency_slack_ms < 0 or self.min_samples < 1:
            raise PolicyError("guard error_slack and latency_slack_ms must be >= 0 and min_samples >= 1")
        if not 0.5 <= self.confidence < 1.0:
            raise PolicyError("guard confidence is a probability from 0.5 up to (not including) 1, e.g. 0.999")
        if not 0.0 <= self.mirror_percent <= 100.0:
            raise PolicyError("guard mirror_percent must be a percentage from 0 to 100")
        if self.min_agreement is not None and not (0.0 <= self.min_agreement <= 1.0 and self.mirror_percent > 0):
            raise PolicyError("guard min_agreement is a fraction from 0 to 1, and needs mirror_percent above 0")
        return GuardLimits(
            max_error_ratio=self.max_error_ratio,
            error_slack=self.error_slack,
            max_p99_ratio=self.max_p99_ratio,
            min_samples=self.min_samples,
            mirror_percent=self.mirror_percent,
            min_agreement=self.min_agreement,
            latency_slack_ms=self.latency_slack_ms,
            confidence=self.confidence,
        )


class RoutingDocument(_Strict):
    policy: Literal["single", "canary", "blue_green", "shadow", "ab"]
    variant: str | None = None  # single
    baseline: str | None = None  # canary
    candidate: str | None = None
    weight: Number | None = None
    steps: list[StepDocument] | None = None
    guard: GuardDocument | None = None
    blue: str | None = None  # blue_green
    green: str | None = None
    live: str | None = None
    primary: str | None = None  # shadow
    shadow: str | None = None
    percent: Number | None = None
    variants: dict[str, Number] | None = None  # ab: variant -> weight
    key: str | None = None  # ab: the header or request parameter holding the user's key

    def to_policy(self) -> Policy:
        """The policy now (a rollout starts at its first step's weight)."""
        kind = self.policy
        if kind == "single":
            return Single(self._need("variant", self.variant))
        if kind == "canary":
            baseline, candidate = self._need("baseline", self.baseline), self._need("candidate", self.candidate)
            if self.steps:
                steps = self.rollout_steps()
                Rollout(baseline, candidate, steps)  # refuses steps that do not rise
                weight = steps[0].weight
            else:
                weight = self._need("weight (or steps)", self.weight)
            return Canary(baseline, candidate, weight)
        if kind == "blue_green":
            blue, green = self._need("blue", self.blue), self._need("green", self.green)
            return BlueGreen(blue, green, self.live or blue)
        if kind == "shadow":
            percent = 100.0 if self.percent is None else self.percent
            return Shadow(self._need("primary", self.primary), self._need("shadow", self.shadow), percent)
        variants = self._need("variants", self.variants)
        return ABTest(tuple(variants.items()), self.key or "user-id")

    def rollout_steps(self) -> tuple[Step, ...]:
        if self.policy != "canary" and self.steps:
            raise PolicyError(f"steps are for a canary rollout, not a {self.policy} policy")
        return tuple(step.to_step() for step in self.steps or ())

    def guard_limits(self) -> GuardLimits:
        return (self.guard or GuardDocument()).to_limits()

    def _need(self, field: str, value: Any) -> Any:
        if value is None:
            raise PolicyError(f"a {self.policy} policy needs '{field}'")
        return value


def parse(document: Any) -> RoutingDocument:
    """A document from decoded JSON; ``PolicyError`` naming the first problem."""
    if not isinstance(document, dict):
        raise PolicyError('a routing policy is a JSON object, e.g. {"policy": "canary", ...}')
    try:
        return RoutingDocument.model_validate(document)
    except ValidationError as exc:
        raise PolicyError(_first_problem(exc, "routing")) from None


def from_config(table: dict[str, Any] | None, file: str) -> RoutingDocument | None:
    """``model.toml``'s ``[routing]`` table, checked as the model is read:
    ``ConfigError`` naming the field (which variants exist is checked once the
    versions are live)."""
    if table is None:
        return None
    try:
        document = RoutingDocument.model_validate(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = "unknown field" if first["type"] == "extra_forbidden" else str(first["msg"])
        raise ConfigError(file, reason.removeprefix("Value error, "), field_path(("routing", *first["loc"]))) from None
    try:
        document.to_policy()
        document.rollout_steps()
        document.guard_limits()
    except PolicyError as exc:
        raise ConfigError(file, str(exc), "routing") from None
    return document


def parse_guard(document: Any) -> GuardLimits:
    """A rollout guard from decoded JSON; ``PolicyError`` naming the first problem."""
    if not isinstance(document, dict):
        raise PolicyError('a rollout guard is a JSON object, e.g. {"max_error_ratio": 2}')
    try:
        return GuardDocument.model_validate(document).to_limits()
    except ValidationError as exc:
        raise PolicyError(_first_problem(exc, "guard")) from None


def _first_problem(exc: ValidationError, whole: str) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or whole
    message = "unknown field" if first["type"] == "extra_forbidden" else str(first["msg"])
    return f"{where}: {message.removeprefix('Value error, ')}"


def describe(policy: Policy) -> dict[str, Any]:
    """The policy as a document (for the admin API and the state store)."""
    if isinstance(policy, Single):
        return {"policy": "single", "variant": policy.variant}
    if isinstance(policy, Canary):
        return {"policy": "canary", "baseline": policy.baseline, "candidate": policy.candidate, "weight": policy.weight}
    if isinstance(policy, BlueGreen):
        return {"policy": "blue_green", "blue": policy.blue, "green": policy.green, "live": policy.live}
    if isinstance(policy, Shadow):
        return {"policy": "shadow", "primary": policy.primary, "shadow": policy.shadow, "percent": policy.percent}
    return {"policy": "ab", "variants": dict(policy.weights), "key": policy.key}
