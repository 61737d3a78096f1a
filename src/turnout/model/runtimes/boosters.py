"""Gradient-boosted trees as their frameworks save them, in their own safe
formats (data, never code):

- ``runtime = "xgboost"`` (``turnout[xgboost]``): ``model.json`` or
  ``model.ubj``, an XGBoost booster (``Booster.save_model``), run with
  ``inplace_predict`` (no DMatrix per batch);
- ``runtime = "lightgbm"`` (``turnout[lightgbm]``): ``model.txt``, a
  LightGBM text booster (``Booster.save_model``).

The signature is the booster's: ``input`` FP32 ``[-1, n_features]``, and
outputs named as their users expect, from the booster's objective. A binary
or multi-class classifier answers ``label`` (INT64, the most probable class)
and ``probabilities`` (FP32, one column per class: two for binary); a
regressor (or any other objective) ``prediction`` (FP32 ``[-1]``).
``[runtime.options.names]`` renames them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from turnout.model.runtimes.base import NO_PARAMETERS, LoadContext, LoadedModel, ModelRuntime, Outputs, Tensors
from turnout.model.runtimes.estimator_outputs import Kind, classifier, regressor
from turnout.model.signature import Signature, TensorSpec


class BoosterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: output names, per kind, for clients that expect others
    names: dict[Kind, str] = {}


class XGBoostRuntime(ModelRuntime):
    platform = "xgboost"
    artifacts: ClassVar[tuple[str, ...]] = ()  # model.json or model.ubj: checked at load
    options = BoosterOptions

    def load(self, context: LoadContext) -> LoadedModel:
        xgboost = _imported("xgboost", "xgboost")
        path = _one_of(context.version_dir, ("model.json", "model.ubj"))
        booster = xgboost.Booster()
        booster.load_model(str(path))
        booster.set_param({"nthread": 1})  # one instance, one core; more instances for more cores
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        classes = 0
        if objective.startswith("binary:"):
            classes = 2
        elif objective in ("multi:softprob", "multi:softmax"):
            classes = int(json.loads(booster.save_config())["learner"]["learner_model_param"]["num_class"])
        return BoosterModel(
            lambda x: booster.inplace_predict(x), booster.num_features(), classes, objective, context.options
        )


class LightGBMRuntime(ModelRuntime):
    platform = "lightgbm"
    artifacts: ClassVar[tuple[str, ...]] = ("model.txt",)
    options = BoosterOptions

    def load(self, context: LoadContext) -> LoadedModel:
        lightgbm = _imported("lightgbm", "lightgbm")
        booster = lightgbm.Booster(model_file=str(context.version_dir / "model.txt"))
        objective = str(booster.dump_model().get("objective", ""))
        classes = 0
        if objective.startswith("binary"):
            classes = 2
        elif objective.startswith(("multiclass", "softmax", "multiclassova")):
            classes = int(booster.dump_model()["num_class"])
        return BoosterModel(
            lambda x: booster.predict(x, num_threads=1), booster.num_feature(), classes, objective, context.options
        )


class BoosterModel(LoadedModel):
    """A booster's predict, shaped into labels and probabilities, or predictions."""

    def __init__(self, predict: Any, features: int, classes: int, objective: str, options: Any) -> None:
        renamed = options.names if options else {}
        self._predict = predict
        self._classes = classes
        self._softmax_labels = objective == "multi:softmax"  # XGBoost answers labels, not probabilities
        inputs = TensorSpec("input", "FP32", (-1, features))
        if classes:
            shaped = classifier(inputs, renamed, classes, "INT64", probabilities=not self._softmax_labels)
        else:
            shaped = regressor(inputs, renamed)
        self._signature, self._kinds = shaped.signature, shaped.kinds

    @property
    def signature(self) -> Signature:
        return self._signature

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        raw = np.asarray(self._predict(next(iter(inputs.values()))))
        if not self._classes:
            return {name: raw.astype(np.float32).reshape(-1) for name in outputs}
        if self._softmax_labels:
            return {name: raw.astype(np.int64).reshape(-1) for name in outputs}
        if self._classes == 2 and raw.ndim == 1:  # the probability of class 1
            probabilities = np.stack([1.0 - raw, raw], axis=1).astype(np.float32)
        else:
            probabilities = raw.astype(np.float32)
        answers: dict[str, np.ndarray[Any, Any]] = {}
        for name in outputs:
            if self._kinds[name] == "probabilities":
                answers[name] = probabilities
            else:
                answers[name] = probabilities.argmax(axis=1).astype(np.int64)
        return answers


def _imported(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise RuntimeError(f"the {module} runtime needs {module}: pip install 'turnout[{extra}]'") from None


def _one_of(version_dir: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (version_dir / name).is_file():
            return version_dir / name
    raise ValueError(f"{version_dir}: none of {list(names)} (save the booster with Booster.save_model)")
