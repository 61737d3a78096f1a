"""The outputs a trained estimator's users expect, shared by the runtimes
that serve one as its framework saved it (``sklearn``, ``xgboost``,
``lightgbm``): a classifier answers ``label`` and, when it has them,
``probabilities``; a regressor ``prediction``. Each kind may be renamed per
model (``[runtime.options.names]``), so the runtime maps output names back
to kinds when it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from turnout.model.signature import Signature, TensorSpec

Kind = Literal["label", "probabilities", "prediction"]


@dataclass(frozen=True, slots=True)
class EstimatorOutputs:
    signature: Signature
    kinds: Mapping[str, Kind]  # output name -> kind


def classifier(
    inputs: TensorSpec, renamed: Mapping[Kind, str], classes: int, label_datatype: str, probabilities: bool
) -> EstimatorOutputs:
    """``label`` [-1] and, with ``probabilities``, ``probabilities`` FP32 [-1, classes]."""
    named: list[tuple[Kind, TensorSpec]] = [("label", TensorSpec(renamed.get("label", "label"), label_datatype, (-1,)))]
    if probabilities:
        name = renamed.get("probabilities", "probabilities")
        named.append(("probabilities", TensorSpec(name, "FP32", (-1, classes))))
    return _outputs(inputs, named)


def regressor(inputs: TensorSpec, renamed: Mapping[Kind, str], targets: int = 1) -> EstimatorOutputs:
    """``prediction`` FP32, [-1] for one target, [-1, targets] for several."""
    shape = (-1,) if targets == 1 else (-1, targets)
    return _outputs(inputs, [("prediction", TensorSpec(renamed.get("prediction", "prediction"), "FP32", shape))])


def _outputs(inputs: TensorSpec, named: list[tuple[Kind, TensorSpec]]) -> EstimatorOutputs:
    return EstimatorOutputs(
        Signature((inputs,), tuple(spec for _, spec in named)), {spec.name: kind for kind, spec in named}
    )
