"""scikit-learn models as they are saved, with skops: ``runtime = "sklearn"``
and a ``model.skops`` in each version directory (the ``sklearn`` extra).

skops refuses, at load, every type it does not know to be safe; the types a
model needs beyond those are trusted by name in ``[runtime.options]
trusted_types`` (a RandomForest needs ``sklearn.tree._tree.Tree``), and
the error names exactly the ones missing. A pickle or joblib file never
loads here: it runs code when loaded.

The signature is the estimator's: one input, ``input`` ``[-1, n_features]``
(FP32 unless ``input_datatype = "FP64"``), and the outputs its users
expect: a classifier answers ``label`` (its classes: INT64 for numbers,
BYTES for text) and ``probabilities`` (FP32 ``[-1, n_classes]``, when it has
``predict_proba``); a regressor ``prediction`` (FP32, ``[-1]`` or
``[-1, n_targets]``). ``[runtime.options.names]`` renames them, for
clients that expect other names (``names = { label = "output_label" }``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from turnout.model.runtimes.base import NO_PARAMETERS, LoadContext, LoadedModel, ModelRuntime, Outputs, Tensors
from turnout.model.runtimes.estimator_outputs import Kind, classifier, regressor
from turnout.model.signature import Signature, TensorSpec
from turnout.protocol.datatypes import BYTES

ARTIFACT = "model.skops"


class SklearnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: types skops does not trust by default that this model needs, by name
    trusted_types: tuple[str, ...] = ()
    input_datatype: Literal["FP32", "FP64"] = "FP32"
    #: output names, per kind (label, probabilities, prediction), for clients that expect others
    names: dict[Kind, str] = {}


class SklearnRuntime(ModelRuntime):
    platform = "sklearn"
    artifacts: ClassVar[tuple[str, ...]] = (ARTIFACT,)
    options = SklearnOptions

    def load(self, context: LoadContext) -> LoadedModel:
        try:
            import skops.io as sio
        except ImportError:
            needs = "the sklearn runtime needs skops and scikit-learn: pip install 'turnout[sklearn]'"
            raise RuntimeError(needs) from None
        options: SklearnOptions = context.options or SklearnOptions()
        path = context.version_dir / ARTIFACT
        untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in options.trusted_types]
        if untrusted:
            listed = ", ".join(f'"{t}"' for t in untrusted)
            raise ValueError(
                f"{ARTIFACT} holds types skops does not trust by default: {untrusted}; if you trust this file, "
                f"name them in model.toml: [runtime.options] trusted_types = [{listed}]"
            )
        estimator = sio.load(path, trusted=list(options.trusted_types))
        return SklearnModel(estimator, options)


class SklearnModel(LoadedModel):
    def __init__(self, estimator: Any, options: SklearnOptions) -> None:
        if not hasattr(estimator, "predict") or not hasattr(estimator, "n_features_in_"):
            raise ValueError(f"{ARTIFACT} holds a {type(estimator).__name__}, not a fitted estimator with predict")
        self._estimator = estimator
        inputs = TensorSpec("input", options.input_datatype, (-1, int(estimator.n_features_in_)))
        classes = getattr(estimator, "classes_", None)
        if classes is not None:
            labels = np.asarray(classes)
            label_datatype = "INT64" if labels.dtype.kind in "iub" else BYTES
            has_probabilities = hasattr(estimator, "predict_proba")
            shaped = classifier(inputs, options.names, len(labels), label_datatype, has_probabilities)
        else:
            shaped = regressor(inputs, options.names, int(getattr(estimator, "n_outputs_", 1)))
        self._signature, self._kinds = shaped.signature, shaped.kinds

    @property
    def signature(self) -> Signature:
        return self._signature

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        x = next(iter(inputs.values()))
        answers: dict[str, np.ndarray[Any, Any]] = {}
        for name in outputs:
            kind = self._kinds[name]
            if kind == "probabilities":
                answers[name] = np.asarray(self._estimator.predict_proba(x), dtype=np.float32)
            elif kind == "label":
                labels = np.asarray(self._estimator.predict(x))
                if labels.dtype.kind in "iub":
                    answers[name] = labels.astype(np.int64)
                else:
                    answers[name] = np.array([str(label).encode() for label in labels], dtype=object)
            else:
                answers[name] = np.asarray(self._estimator.predict(x), dtype=np.float32)
        return answers
