"""The benchmark's numpy logistic regression (32 features) as a turnout Python model."""

import numpy as np

from turnout import ModelContext, PythonModel, Tensor


class LogisticRegression(PythonModel):
    inputs = (Tensor("input", "FP32", [-1, 32]),)
    outputs = (Tensor("probability", "FP32", [-1]),)

    def load(self, context: ModelContext) -> None:
        weights = np.load(context.version_dir / "weights.npz")
        self.coef, self.intercept = weights["coef"], weights["intercept"]

    def predict(self, inputs, parameters):
        z = inputs["input"] @ self.coef + self.intercept
        return {"probability": (1.0 / (1.0 + np.exp(-z))).astype(np.float32)}
