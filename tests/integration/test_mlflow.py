"""Serving from a real MLflow Model Registry (SQLite backend store, local
artifact folder, mlflow-skinny): the server follows an alias as it moves,
without a failed request; an alias moved to a broken model leaves the
serving version in place; a scikit-learn model saved with skops is converted
to ONNX on the way in, or served as it is when model.toml names the sklearn
runtime (a RandomForest), and XGBoost and LightGBM boosters natively."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow  # the dev extra installs it (turnout[mlflow])
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from tests.support import ServerProcess, wait_until

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# mlflow's SQL store uses SQLAlchemy options deprecated in 2.1: theirs to change, not a failure here
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

X, Y = load_diabetes(return_X_y=True)
X = X.astype(np.float32)


class Registry:
    """A local MLflow registry, as a data scientist's side of it."""

    def __init__(self, root: Path) -> None:
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        experiment = mlflow.create_experiment("turnout-tests", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment)
        self.client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register_onnx(self, name: str, alpha: float) -> tuple[int, Ridge]:
        from skl2onnx import to_onnx

        model = Ridge(alpha=alpha).fit(X, Y)
        onnx_model = to_onnx(model, X[:1], target_opset={"": 17, "ai.onnx.ml": 3})
        onnx_model.graph.input[0].name = "input"
        for node in onnx_model.graph.node:
            node.input[:] = ["input" if n == "X" else n for n in node.input]
        with mlflow.start_run():
            info = mlflow.onnx.log_model(onnx_model, name="model", registered_model_name=name)
        return int(info.registered_model_version), model

    def register_skops(self, name: str, alpha: float) -> tuple[int, Ridge]:
        model = Ridge(alpha=alpha).fit(X, Y)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name, serialization_format="skops"
            )
        return int(info.registered_model_version), model

    def break_version(self, name: str, version: int) -> None:
        """Corrupt the stored artifact of a registered version (a bad upload)."""
        source = self.client.get_model_version(name, str(version)).source
        location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
        (Path(location.removeprefix("file://")) / "model.onnx").write_bytes(b"this is not a model")

    def move(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))


def predict(url: str, rows: np.ndarray[Any, Any]) -> tuple[str, np.ndarray[Any, Any]]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    answer = httpx.post(f"{url}/v2/models/fraud/infer", json=body, timeout=30).json()
    return answer["model_version"], np.array(answer["outputs"][0]["data"], dtype=np.float32)


def test_the_server_follows_an_alias_without_a_failed_request(tmp_path: Path, log_dir: Path) -> None:
    registry = Registry(tmp_path)
    first, ridge_1 = registry.register_onnx("fraud", alpha=1.0)
    second, ridge_2 = registry.register_onnx("fraud", alpha=100.0)
    registry.move("fraud", "champion", first)
    repository = tmp_path / "models"
    repository.mkdir()
    server = ServerProcess(
        repository,
        "--registry", "mlflow", "--mlflow-uri", registry.uri, "--mlflow-model", "models:/fraud@champion",
        "--poll-interval", "0.3",
        log_dir=log_dir,
    )  # fmt: skip
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": X[0].tolist()}]}
            while not stop.is_set():
                response = client.post("/v2/models/fraud/infer", json=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    versions.append(response.json()["model_version"])

    with server:
        version, outputs = predict(server.url, X[:5])
        assert version == str(first)
        np.testing.assert_allclose(outputs, ridge_1.predict(X[:5]), rtol=1e-4, atol=1e-2)
        clients = [threading.Thread(target=load) for _ in range(3)]
        for thread in clients:
            thread.start()
        registry.move("fraud", "champion", second)
        deadline = time.monotonic() + 60
        while predict(server.url, X[:1])[0] != str(second):
            assert time.monotonic() < deadline, "the server did not follow the alias"
            time.sleep(0.1)
        version, outputs = predict(server.url, X[:5])
        np.testing.assert_allclose(outputs, ridge_2.predict(X[:5]), rtol=1e-4, atol=1e-2)
        # an alias moved to a broken upload: refused, version 2 keeps serving
        broken, _ = registry.register_onnx("fraud", alpha=10.0)
        registry.break_version("fraud", broken)
        registry.move("fraud", "champion", broken)
        deadline = time.monotonic() + 60
        while f"version {broken} not deployed" not in server.log():
            assert time.monotonic() < deadline, "the broken version was not tried"
            time.sleep(0.1)
        assert predict(server.url, X[:1])[0] == str(second)
        # a scikit-learn model saved with skops: converted to ONNX at pull time
        skops_version, ridge_4 = registry.register_skops("fraud", alpha=0.1)
        registry.move("fraud", "champion", skops_version)
        deadline = time.monotonic() + 60
        while predict(server.url, X[:1])[0] != str(skops_version):
            assert time.monotonic() < deadline, "the skops version was not deployed"
            time.sleep(0.1)
        _, outputs = predict(server.url, X[:5])
        np.testing.assert_allclose(outputs, ridge_4.predict(X[:5]), rtol=1e-4, atol=1e-2)
        stop.set()
        for thread in clients:
            thread.join(30)
    assert failures == []
    assert str(broken) not in versions
    assert {str(first), str(second)} <= set(versions)


def test_forests_and_boosters_are_served_as_their_frameworks_saved_them(tmp_path: Path, log_dir: Path) -> None:
    """The RandomForest a data scientist logs with skops (a type skops does not
    trust by default) is served as it is once the operator's model.toml names
    the sklearn runtime and trusts that type; XGBoost and LightGBM boosters
    need nothing written: their flavour picks their runtime."""
    import lightgbm
    import xgboost
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    registry = Registry(tmp_path)
    x, y = load_breast_cancer(return_X_y=True)
    rows = x[:6].astype(np.float32)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    xgb = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(x, label=y), 5)
    lgb = lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, label=y), 5)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            forest, name="f", registered_model_name="forest", serialization_format="skops",
            skops_trusted_types=["sklearn.tree._tree.Tree"],  # mlflow checks that it can load what it saved
        )  # fmt: skip
        mlflow.xgboost.log_model(xgb, name="x", registered_model_name="xgb")
        mlflow.lightgbm.log_model(lgb, name="l", registered_model_name="lgb")
    for name in ("forest", "xgb", "lgb"):
        registry.move(name, "champion", 1)
    repository = tmp_path / "models"
    (repository / "forest").mkdir(parents=True)
    (repository / "forest" / "model.toml").write_text(
        'runtime.name = "sklearn"\n[version_policy]\nall = true\n'
        '[runtime.options]\ntrusted_types = ["sklearn.tree._tree.Tree"]\n'
    )
    references = [arg for name in ("forest", "xgb", "lgb") for arg in ("--mlflow-model", f"models:/{name}@champion")]
    server = ServerProcess(
        repository, "--registry", "mlflow", "--mlflow-uri", registry.uri, *references, log_dir=log_dir
    )
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [6, 30], "data": rows.ravel().tolist()}]}
    with server:
        answers = {}
        for name in ("forest", "xgb", "lgb"):
            reply = wait_until(
                lambda n=name: (
                    (r := httpx.post(f"{server.url}/v2/models/{n}/infer", json=body, timeout=30)).status_code == 200
                    and r
                ),
                f"{name} served",
                60,
            )
            answers[name] = {o["name"]: o["data"] for o in reply.json()["outputs"]}
        platforms = {n: httpx.get(f"{server.url}/v2/models/{n}").json()["platform"] for n in answers}
    assert platforms == {"forest": "sklearn", "xgb": "xgboost", "lgb": "lightgbm"}
    assert answers["forest"]["label"] == forest.predict(rows).tolist()
    np.testing.assert_allclose(np.array(answers["xgb"]["probabilities"])[1::2], xgb.inplace_predict(rows), rtol=1e-5)
    np.testing.assert_allclose(np.array(answers["lgb"]["probabilities"])[1::2], lgb.predict(rows), rtol=1e-5)


SHOUTER = """
import mlflow.pyfunc
import pandas as pd


class Shouter(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"shouted": model_input["text"].str.upper()})


mlflow.models.set_model(Shouter())
"""


def test_a_pyfunc_model_is_served_by_the_python_runtime_only_when_trusted(tmp_path: Path, log_dir: Path) -> None:
    """A model logged only as a pyfunc is pulled as a Python model: the one
    whose model.toml the operator wrote trusted answers through the server;
    the one left to the flavour's defaults is refused with the reason, and
    the server keeps serving."""
    import pandas as pd
    from mlflow.models import infer_signature

    registry = Registry(tmp_path)
    (tmp_path / "shouter.py").write_text(SHOUTER)
    signature = infer_signature(pd.DataFrame({"text": ["a"]}), pd.DataFrame({"shouted": ["A"]}))
    for name in ("trusted_shout", "default_shout"):
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="m", python_model=str(tmp_path / "shouter.py"), signature=signature, registered_model_name=name
            )
        registry.move(name, "champion", 1)
    repository = tmp_path / "models"
    (repository / "trusted_shout").mkdir(parents=True)
    (repository / "trusted_shout" / "model.toml").write_text('runtime = "python"\ntrusted = true\n')
    references = [a for n in ("trusted_shout", "default_shout") for a in ("--mlflow-model", f"models:/{n}@champion")]
    server = ServerProcess(
        repository, "--registry", "mlflow", "--mlflow-uri", registry.uri, "--allow-trusted-models", *references,
        log_dir=log_dir,
    )  # fmt: skip
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["merlot", "rosé"]}]}
    with server.start(wait_ready=False):  # one model stays UNAVAILABLE: the server is live, never ready
        reply = wait_until(
            lambda: (
                (r := httpx.post(f"{server.url}/v2/models/trusted_shout/infer", json=body, timeout=30)).status_code
                == 200
                and r
            ),
            "the trusted pyfunc served",
            90,
        )
        assert reply.json()["outputs"][0]["data"] == ["MERLOT", "ROSÉ"]
        refused = wait_until(
            lambda: next(
                (e for e in httpx.post(f"{server.url}/v2/repository/index").json()
                 if e["name"] == "default_shout" and e.get("reason")), None,
            ),
            "the untrusted pyfunc refused",
            90,
        )  # fmt: skip
    assert refused["state"] == "UNAVAILABLE"
    assert "model.py is Python code, which runs code when loaded: refused without `trusted = true`" in refused["reason"]
    assert 'runtime = "python"' in (repository / "default_shout" / "model.toml").read_text()
    # MLflow's download progress bars and mlflow's warnings (from the pyfunc's worker
    # process) never come through as bare lines between the server's log records
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert not [line for line in lines if "Downloading artifacts" in line]
    assert not [line for line in lines if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line)]
