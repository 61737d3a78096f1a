"""What a variant name means: a version of the endpoint's own model ("2"),
another model ("fraud_v2", its default version) or another model's version
("fraud_v2:3"). Pure: the caller looks the target up in the registry (and
checks signatures with ``model.signature.incompatibility``).
"""

from __future__ import annotations

from dataclasses import dataclass

from turnout.routing.policy import PolicyError


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    version: str | None  # None: that model's default version


def target(endpoint: str, variant: str) -> Target:
    if variant.isdigit():
        return Target(endpoint, variant)
    model, colon, version = variant.partition(":")
    if not model or (colon and not version.isdigit()):
        raise PolicyError(f"variant {variant!r} is neither a version ('2'), a model ('other') nor 'model:version'")
    return Target(model, version or None)
