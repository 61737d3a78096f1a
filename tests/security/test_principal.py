"""Who may do what: the role and allow-list rules, as a table."""

from __future__ import annotations

import pytest

from turnout.errors import Forbidden
from turnout.security.principal import ANONYMOUS, Action, Principal, Role, authorize, parse_roles

CLIENT = Principal("client", frozenset({Role.INFER}))
FRAUD_ONLY = Principal("fraud-app", frozenset({Role.INFER}), frozenset({"fraud"}))
READER = Principal("dashboard", frozenset({Role.READ}))
OPERATOR = Principal("ops", frozenset({Role.ADMIN}))
NOBODY = Principal("empty", frozenset())


@pytest.mark.parametrize(
    ("principal", "action", "model", "allowed"),
    [
        (CLIENT, Action.INFER, "fraud", True),
        (CLIENT, Action.READ, "fraud", True),  # metadata of a model it may call
        (CLIENT, Action.READ, None, False),  # metrics, repository index
        (CLIENT, Action.ADMIN, "fraud", False),
        (FRAUD_ONLY, Action.INFER, "fraud", True),
        (FRAUD_ONLY, Action.INFER, "churn", False),
        (FRAUD_ONLY, Action.READ, "churn", False),
        (READER, Action.READ, None, True),
        (READER, Action.READ, "churn", True),
        (READER, Action.INFER, "churn", False),
        (READER, Action.ADMIN, None, False),
        (OPERATOR, Action.ADMIN, "churn", True),
        (OPERATOR, Action.READ, None, True),
        (OPERATOR, Action.INFER, "churn", False),  # an operator's key is not a client's key
        (NOBODY, Action.READ, "churn", False),
        (ANONYMOUS, Action.INFER, "churn", True),
        (ANONYMOUS, Action.ADMIN, None, False),
    ],
)
def test_authorize(principal: Principal, action: Action, model: str | None, allowed: bool) -> None:
    if allowed:
        authorize(principal, action, model)
    else:
        with pytest.raises(Forbidden) as refused:
            authorize(principal, action, model)
        assert principal.name in refused.value.message


def test_a_refusal_says_which_right_is_missing() -> None:
    with pytest.raises(Forbidden, match="admin role"):
        authorize(CLIENT, Action.ADMIN)
    with pytest.raises(Forbidden, match="may not run model 'churn'"):
        authorize(FRAUD_ONLY, Action.INFER, "churn")


def test_role_names_are_checked() -> None:
    assert parse_roles(["infer", "read"], "here") == {Role.INFER, Role.READ}
    with pytest.raises(ValueError, match=r"here: unknown role 'root' \(roles: infer, read, admin\)"):
        parse_roles(["root"], "here")
