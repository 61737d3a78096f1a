"""The benchmark's two custom Python models for MLServer, written the way its
custom-runtime guide writes one: ``load`` reads the model, ``predict`` decodes
the input with ``NumpyCodec`` and encodes the output back. MLServer runs them
in its parallel inference workers (``parallel_workers`` in settings.json) and
batches with its adaptive batching (``max_batch_size``, ``max_batch_time``).
"""

from __future__ import annotations

import numpy as np
import xgboost
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class _Probability(MLModel):
    def answer(self, payload: InferenceRequest, probability: np.ndarray) -> InferenceResponse:
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name="probability", payload=probability.astype(np.float32))],
        )


class LogisticRegression(_Probability):
    async def load(self) -> bool:
        weights = np.load(await get_model_uri(self._settings, wellknown_filenames=["weights.npz"]))
        self.coef, self.intercept = weights["coef"], weights["intercept"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        return self.answer(payload, 1.0 / (1.0 + np.exp(-(x @ self.coef + self.intercept))))


class XGBoostClassifier(_Probability):
    async def load(self) -> bool:
        self.booster = xgboost.Booster(
            model_file=await get_model_uri(self._settings, wellknown_filenames=["model.json"])
        )
        self.booster.set_param({"nthread": 1})
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        return self.answer(payload, np.asarray(self.booster.inplace_predict(x)))
