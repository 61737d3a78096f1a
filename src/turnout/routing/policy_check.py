"""Whether a policy can be in force: each of its variants served now, and
able to take what clients send the endpoint. Asked of every policy before it
applies (set through the API, read from model.toml, taken up from a store)."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from turnout.errors import NotFound, TurnoutError
from turnout.model.signature import incompatibility
from turnout.routing.policy import Policy, PolicyError
from turnout.routing.variants import target


class Registry(Protocol):
    """What traffic control needs of the model registry (``ModelRegistry``)."""

    def get(self, name: str, version: str | None = None) -> Any: ...

    def known(self, name: str) -> bool: ...


def check_policy(registry: Registry, endpoint: str, policy: Policy) -> None:
    """Every variant is served now, and can take the requests clients send
    the endpoint (its own default version's signature, or the first
    variant's when the endpoint's model is not live)."""
    reference = None
    with contextlib.suppress(TurnoutError):
        reference = (endpoint, registry.get(endpoint))
    for variant in policy.variants:
        where = target(endpoint, variant)
        try:
            served = registry.get(where.model, where.version)
        except NotFound as exc:
            raise PolicyError(f"unknown variant {variant!r}: {exc} (is it in the version_policy?)") from None
        except TurnoutError as exc:
            raise PolicyError(f"variant {variant!r} is not ready: {exc}") from None
        if reference is None:
            reference = (variant, served)
            continue
        problem = incompatibility(
            reference[1].signature, served.signature, reference[1].max_batch_size, served.max_batch_size
        )
        if problem:
            raise PolicyError(
                f"variant {variant!r} has a signature incompatible with {reference[0]!r} (clients' requests): {problem}"
            )
