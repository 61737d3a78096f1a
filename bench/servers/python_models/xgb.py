"""The benchmark's XGBoost classifier as a turnout Python model (its own code, not the native runtime)."""

import numpy as np
import xgboost

from turnout import ModelContext, PythonModel, Tensor


class XGBoostClassifier(PythonModel):
    inputs = (Tensor("input", "FP32", [-1, 32]),)
    outputs = (Tensor("probability", "FP32", [-1]),)

    def load(self, context: ModelContext) -> None:
        self.booster = xgboost.Booster(model_file=str(context.version_dir / "model.json"))
        self.booster.set_param({"nthread": 1})

    def predict(self, inputs, parameters):
        return {"probability": np.asarray(self.booster.inplace_predict(inputs["input"]), dtype=np.float32)}
