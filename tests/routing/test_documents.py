"""Policy documents (model.toml's [routing] and the admin API's JSON), variant
names, signature compatibility, rollout step syntax, the state store and the
guard's windows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from turnout.errors import ConfigError
from turnout.model.config import load_config
from turnout.model.signature import Signature, TensorSpec, incompatibility
from turnout.routing.document import RoutingDocument, describe, from_config, parse
from turnout.routing.policy import ABTest, BlueGreen, Canary, PolicyError, Shadow, Single
from turnout.routing.rollout import Step
from turnout.routing.route import parse_steps
from turnout.routing.state_store import RoutingStore
from turnout.routing.variants import Target, target


@pytest.mark.parametrize(
    "document",
    [
        {"policy": "single", "variant": "2"},
        {"policy": "canary", "baseline": "1", "candidate": "2", "weight": 10.0},
        {"policy": "blue_green", "blue": "1", "green": "2", "live": "2"},
        {"policy": "shadow", "primary": "1", "shadow": "other:3", "percent": 25.0},
        {"policy": "ab", "variants": {"1": 50.0, "2": 50.0}, "key": "user-id"},
    ],
)
def test_documents_round_trip(document: dict[str, object]) -> None:
    assert describe(parse(document).to_policy()) == document


def test_documents_build_the_policies() -> None:
    assert parse({"policy": "single", "variant": "1"}).to_policy() == Single("1")
    assert parse({"policy": "blue_green", "blue": "a", "green": "b"}).to_policy() == BlueGreen("a", "b", "a")
    assert parse({"policy": "shadow", "primary": "1", "shadow": "2"}).to_policy() == Shadow("1", "2", 100.0)
    assert parse({"policy": "ab", "variants": {"x": 30, "y": 70}}).to_policy() == ABTest(
        (("x", 30.0), ("y", 70.0)), "user-id"
    )
    stepped = parse(
        {"policy": "canary", "baseline": "1", "candidate": "2", "steps": [{"weight": 5, "min_requests": 10}]}
    )
    assert stepped.to_policy() == Canary("1", "2", 5.0)
    assert stepped.rollout_steps() == (Step(5.0, None, 10),)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"policy": "random"}, "policy"),
        ({"policy": "canary", "baseline": "1", "weight": 5}, "needs 'candidate'"),
        ({"policy": "canary", "baseline": "1", "candidate": "2"}, "needs 'weight (or steps)'"),
        ({"policy": "canary", "baseline": "1", "candidate": "1", "weight": 5}, "more than once"),
        ({"policy": "ab", "variants": {"1": 50, "2": 40}}, "sum to 100"),
        ({"policy": "ab", "variants": {"1": 100}}, "at least two"),
        ({"policy": "shadow", "primary": "1", "shadow": "2", "percent": -1}, "percentage"),
        ({"policy": "blue_green", "blue": "1", "green": "2", "live": "3"}, "neither blue"),
        ({"policy": "single", "variant": "1", "extra": 1}, "extra: unknown field"),
        ({"policy": "single", "variant": 1}, "variant"),
    ],
)
def test_bad_documents_say_why(document: object, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse(document).to_policy()


def test_rollout_steps_must_rise_and_guard_ratios_make_sense() -> None:
    falling = {"policy": "canary", "baseline": "1", "candidate": "2", "steps": [{"weight": 50, "hold_seconds": 1},
               {"weight": 10, "hold_seconds": 1}]}  # fmt: skip
    with pytest.raises(PolicyError, match="must rise"):
        parse(falling).to_policy()
    with pytest.raises(PolicyError, match="steps are for a canary"):
        parse({"policy": "single", "variant": "1", "steps": [{"weight": 5, "hold_seconds": 1}]}).rollout_steps()
    with pytest.raises(PolicyError, match="at least 1"):
        parse({"policy": "single", "variant": "1", "guard": {"max_p99_ratio": 0.5}}).guard_limits()
    for guard, message in (({"confidence": 1.0}, "confidence"), ({"confidence": 0.2}, "confidence"),
                           ({"latency_slack_ms": -1}, "latency_slack_ms")):  # fmt: skip
        with pytest.raises(PolicyError, match=message):
            parse({"policy": "single", "variant": "1", "guard": guard}).guard_limits()
    limits = parse({"policy": "single", "variant": "1", "guard": {"confidence": 0.99, "latency_slack_ms": 0}})
    assert (limits.guard_limits().confidence, limits.guard_limits().latency_slack_ms) == (0.99, 0.0)


def test_model_toml_routing_is_checked_when_the_model_is_read(tmp_path: Path) -> None:
    good = '[routing]\npolicy = "canary"\nbaseline = "1"\ncandidate = "2"\nweight = 10\n'

    def routing_of(text: str) -> RoutingDocument | None:
        (tmp_path / "model.toml").write_text(text)
        return from_config(load_config(tmp_path).routing, "model.toml")

    routing = routing_of(good)
    assert routing is not None and routing.to_policy() == Canary("1", "2", 10.0)
    with pytest.raises(ConfigError, match="percentage from 0 to 100"):
        routing_of(good.replace("weight = 10", "weight = 110"))
    with pytest.raises(ConfigError, match="hold time"):
        routing_of(good + "[[routing.steps]]\nweight = 50\n")
    with pytest.raises(ConfigError, match=r"routing\.colour: unknown field"):
        routing_of(good + 'colour = "red"\n')
    assert routing_of("max_batch_size = 0\n") is None


def test_variant_names() -> None:
    assert target("fraud", "2") == Target("fraud", "2")
    assert target("fraud", "fraud_v2") == Target("fraud_v2", None)
    assert target("fraud", "fraud_v2:3") == Target("fraud_v2", "3")
    for bad in ("other:", "other:x", ":3"):
        with pytest.raises(PolicyError, match="neither a version"):
            target("fraud", bad)


def _signature(rows: int = -1, features: int = 4, label: str = "INT64") -> Signature:
    return Signature(
        (TensorSpec("x", "FP32", (rows, features)),),
        (TensorSpec("label", label, (rows,)), TensorSpec("p", "FP32", (rows, 2))),
    )


def test_signature_compatibility() -> None:
    assert incompatibility(_signature(), _signature()) is None
    # a candidate fixed at 8 rows cannot take what a reference taking any number accepts...
    assert incompatibility(_signature(), _signature(rows=8)) == "input 'x': shape [-1, 4] against [8, 4]"
    # ...while one taking any number can stand in for one fixed at 8, inputs and outputs alike
    fixed, open_ = _signature(rows=8), _signature()
    assert incompatibility(fixed, open_) == "output 'label': shape [8] against [-1]"
    same_outputs = Signature(open_.inputs, fixed.outputs)
    assert incompatibility(fixed, same_outputs) is None
    assert incompatibility(_signature(), _signature(), 64, 8) == (
        "max_batch_size 8 against 64: larger requests would fail"
    )
    assert incompatibility(_signature(), _signature(), 8, 64) is None
    assert incompatibility(_signature(), _signature(), 0, 8) == (
        "max_batch_size 8 against 0: one batches requests, the other does not"
    )
    assert incompatibility(_signature(), _signature(), 0, 0) is None
    assert incompatibility(_signature(), _signature(features=5)) == "input 'x': shape [-1, 4] against [-1, 5]"
    assert incompatibility(_signature(), _signature(label="INT32")) == "output 'label': INT64 against INT32"
    renamed = Signature((TensorSpec("y", "FP32", (-1, 4)),), _signature().outputs)
    assert incompatibility(_signature(), renamed) == "inputs differ: ['x'] against ['y']"


def test_step_syntax() -> None:
    assert parse_steps("5:30s, 25:30s:200r,100:50r") == (
        Step(5.0, 30.0, None),
        Step(25.0, 30.0, 200),
        Step(100.0, None, 50),
    )
    for bad in ("5", "5:30m", "x:30s", "5:0s"):
        with pytest.raises(PolicyError):
            parse_steps(bad)


def test_state_store_keeps_states_and_events_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "routing.db"
    store = RoutingStore(path)
    store.save("wine", {"policy": {"policy": "single", "variant": "2"}}, ("policy", "single 2", "ops"))
    store.save("other", {"policy": {"policy": "single", "variant": "1"}})
    store.save("other", None, ("cleared", "gone", "ops"))
    store.log("wine", "refused", "bad weights", "ops")
    store.close()
    reopened = RoutingStore(path)
    assert reopened.load() == {"wine": {"policy": {"policy": "single", "variant": "2"}}}
    events = reopened.events("wine")
    assert [(e.kind, e.detail, e.actor) for e in events] == [
        ("policy", "single 2", "ops"),
        ("refused", "bad weights", "ops"),
    ]
    assert [e.kind for e in reopened.events(None)] == ["policy", "cleared", "refused"]
    assert [e.kind for e in reopened.events(None, limit=1)] == ["refused"]
    assert events[0].as_dict()["time"].endswith("Z")
    reopened.close()
