"""Who is calling and what they may do: roles, model allow lists, and the pure
decision whether a principal may take an action.

Roles:
- ``infer``: call models (all, or those in the principal's allow list), and
  read the metadata of the models it may call, as clients do before inferring;
- ``read``: metadata, repository index and metrics, for every model;
- ``admin``: change state (load, unload, and the routing and lifecycle
  actions to come); implies ``read``, not ``infer``: an operator's key is not
  a client's key.

Health probes (live/ready) need no credential: orchestrators call them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from turnout.errors import Forbidden


class Role(enum.Enum):
    INFER = "infer"
    READ = "read"
    ADMIN = "admin"


class Action(enum.Enum):
    INFER = "infer"  # run a model
    READ = "read"  # metadata, readiness of a model, repository index, metrics
    ADMIN = "admin"  # change state


def parse_roles(values: Iterable[str], where: str) -> frozenset[Role]:
    """Role names as written in a key record, a JWT claim or the command line."""
    roles = set()
    for value in values:
        try:
            roles.add(Role(value))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ValueError(f"{where}: unknown role {value!r} (roles: {known})") from None
    return frozenset(roles)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``models`` None: every model."""

    name: str
    roles: frozenset[Role]
    models: frozenset[str] | None = None
    via: str = "key"  # "key", "jwt" or "anonymous": how it was established, for the audit log

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


# Inference with authentication off: the demo mode the start-up log warns about.
ANONYMOUS = Principal("anonymous", frozenset({Role.INFER, Role.READ}), None, via="anonymous")


def authorize(principal: Principal, action: Action, model: str | None = None) -> None:
    """Raise ``Forbidden`` (403 / PERMISSION_DENIED) unless ``principal`` may
    take ``action`` (on ``model``, where the action concerns one)."""
    roles = principal.roles
    if action is Action.ADMIN:
        if Role.ADMIN in roles:
            return
        raise Forbidden(f"'{principal.name}' may not change the server's state (needs the admin role)")
    if action is Action.READ:
        if Role.READ in roles or Role.ADMIN in roles:
            return
        if model is not None and Role.INFER in roles and principal.may_use(model):
            return
        what = f"model '{model}'" if model is not None else "this"
        raise Forbidden(f"'{principal.name}' may not read {what} (needs the read role)")
    if Role.INFER not in roles:
        raise Forbidden(f"'{principal.name}' may not run models (needs the infer role)")
    if model is not None and not principal.may_use(model):
        raise Forbidden(f"'{principal.name}' may not run model '{model}'")
