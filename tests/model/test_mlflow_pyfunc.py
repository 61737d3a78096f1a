"""MLflow pyfunc models served by the Python runtime, as the MLflow source
pulls them (``mlflow_model/`` and the ``model.py`` it writes), in a worker
process: a tensor-based signature (a logistic regression fitted on
scikit-learn's breast cancer data, its weights an artifact) and a
column-based one with text; both only when trusted."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from tests.model.loading_support import loaded
from turnout.model.loader import LoadFailed
from turnout.model.mlflow_source import PYFUNC_MODEL_PY
from turnout.model.runtimes.mlflow_pyfunc import MLFLOW_MODEL

# mlflow warns, on import and on saving, about type hints and deprecations of its own: not failures here
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


def infer_signature(given: object, answer: object) -> object:
    from mlflow.models import infer_signature

    return infer_signature(given, answer)


SCORER = """
import mlflow.pyfunc
import numpy as np


class Scorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        weights = np.load(context.artifacts["weights"])
        self.coef, self.intercept = weights["coef"], weights["intercept"]

    def predict(self, context, model_input, params=None):
        return 1.0 / (1.0 + np.exp(-(model_input @ self.coef + self.intercept)))


mlflow.models.set_model(Scorer())
"""

SHOUTER = """
import mlflow.pyfunc
import pandas as pd


class Shouter(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"shouted": model_input["text"].str.upper() + model_input["times"].map(lambda n: "!" * n),
                             "characters": model_input["text"].str.len()})


mlflow.models.set_model(Shouter())
"""


def pulled(root: Path, name: str, code: str, trusted: bool = True, **save: object) -> Path:
    """A version directory as the MLflow source writes it for a pyfunc model."""
    import mlflow.pyfunc

    version = root / name / "1"
    version.mkdir(parents=True)
    (root / name / "model.toml").write_text(f'runtime = "python"\ntrusted = {str(trusted).lower()}\n')
    (root / "code.py").write_text(textwrap.dedent(code))
    mlflow.pyfunc.save_model(str(version / MLFLOW_MODEL), python_model=str(root / "code.py"), **save)  # type: ignore[arg-type]
    (version / "model.py").write_text(PYFUNC_MODEL_PY)
    return version


def test_a_tensor_pyfunc_serves_its_logged_signature_and_answers(tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    fitted = LogisticRegression(max_iter=5000).fit(x, y)
    np.savez(tmp_path / "weights.npz", coef=fitted.coef_[0].astype(np.float32), intercept=fitted.intercept_)
    signature = infer_signature(x[:5], fitted.predict_proba(x[:5])[:, 1].astype(np.float32))
    pulled(tmp_path, "cancer", SCORER, artifacts={"weights": str(tmp_path / "weights.npz")}, signature=signature)
    with loaded(tmp_path, "cancer", allow_trusted=True) as version:
        described = [s.describe() for s in (*version.signature.inputs, *version.signature.outputs)]
        assert described == ["input FP32 [-1, 30]", "output FP32 [-1]"]
        out = version.instances[0].predict({"input": x[:20]}, ["output"])
    np.testing.assert_allclose(out["output"], fitted.predict_proba(x[:20])[:, 1], rtol=1e-4)


def test_a_column_pyfunc_takes_text_as_a_dataframe_and_answers_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["hello", "wine"], "times": [1, 3]})
    answer = pd.DataFrame({"shouted": ["HELLO!", "WINE!!!"], "characters": [5, 4]})
    pulled(tmp_path, "shout", SHOUTER, signature=infer_signature(frame, answer))
    with loaded(tmp_path, "shout", allow_trusted=True) as version:
        described = [s.describe() for s in (*version.signature.inputs, *version.signature.outputs)]
        assert described == [
            "text BYTES [-1]", "times INT64 [-1]", "shouted BYTES [-1]", "characters INT64 [-1]",
        ]  # fmt: skip
        given = {"text": np.array([b"caf\xc3\xa9", b"ok"], dtype=object), "times": np.array([2, 1])}
        out = version.instances[0].predict(given, ["shouted", "characters"])
    assert out["shouted"].tolist() == ["CAFÉ!!".encode(), b"OK!"]
    assert out["characters"].tolist() == [4, 2]


def test_a_pyfunc_is_code_so_it_needs_trust(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["hello"], "times": [1]})
    signature = infer_signature(frame, pd.DataFrame({"shouted": ["HELLO!"], "characters": [5]}))
    pulled(tmp_path, "shout", SHOUTER, trusted=False, signature=signature)
    refused = pytest.raises(LoadFailed, match=r"model.py is Python code, which runs code when loaded: refused without")
    with refused, loaded(tmp_path, "shout", allow_trusted=True):
        pass
