"""The xgboost and lightgbm runtimes in-process, on boosters trained on
scikit-learn's bundled data: a binary and a multi-class classifier answer
labels and probabilities equal to the framework's own predictions, a
regressor its predictions, names can change, and a missing file says what
to save."""

from __future__ import annotations

from pathlib import Path

import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from tests.model.loading_support import loaded
from turnout.model.loader import LoadFailed


def repository(root: Path, name: str, runtime: str, options: str = "") -> Path:
    (root / name / "1").mkdir(parents=True)
    (root / name / "model.toml").write_text(f'runtime.name = "{runtime}"\n[runtime.options]\n{options}')
    return root / name / "1"


def xgb(params: dict[str, object], x: np.ndarray, y: np.ndarray) -> xgboost.Booster:
    return xgboost.train({**params, "nthread": 1}, xgboost.DMatrix(x, label=y), 5)


def lgb(params: dict[str, object], x: np.ndarray, y: np.ndarray) -> lightgbm.Booster:
    return lightgbm.train({**params, "verbose": -1, "num_threads": 1}, lightgbm.Dataset(x, label=y), 5)


@pytest.mark.parametrize("file", ["model.json", "model.ubj"])
def test_xgboost_binary_answers_labels_and_probabilities(tmp_path: Path, file: str) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    booster = xgb({"objective": "binary:logistic"}, x, y)
    booster.save_model(repository(tmp_path, "cancer", "xgboost") / file)
    rows = x[:40].astype(np.float32)
    with loaded(tmp_path, "cancer") as version:
        described = [s.describe() for s in (*version.signature.inputs, *version.signature.outputs)]
        assert described == ["input FP32 [-1, 30]", "label INT64 [-1]", "probabilities FP32 [-1, 2]"]
        out = version.instances[0].predict({"input": rows}, ["label", "probabilities"])
    p = booster.inplace_predict(rows)
    np.testing.assert_allclose(out["probabilities"][:, 1], p, rtol=1e-6)
    assert out["label"].tolist() == (p > 0.5).astype(int).tolist()


def test_xgboost_multiclass_and_regression(tmp_path: Path) -> None:
    iris = load_iris()
    booster = xgb({"objective": "multi:softprob", "num_class": 3}, iris.data, iris.target)
    booster.save_model(repository(tmp_path, "iris", "xgboost", 'names = { label = "species" }\n') / "model.json")
    x, y = load_diabetes(return_X_y=True)
    ridge = xgb({"objective": "reg:squarederror"}, x, y)
    ridge.save_model(repository(tmp_path, "diabetes", "xgboost") / "model.json")
    with loaded(tmp_path, "iris") as version:
        out = version.instances[0].predict({"input": iris.data[:10].astype(np.float32)}, ["species", "probabilities"])
    expected = booster.inplace_predict(iris.data[:10].astype(np.float32))
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-6)
    assert out["species"].tolist() == expected.argmax(axis=1).tolist()
    with loaded(tmp_path, "diabetes") as version:
        assert [s.describe() for s in version.signature.outputs] == ["prediction FP32 [-1]"]
        out = version.instances[0].predict({"input": x[:5].astype(np.float32)}, ["prediction"])
    np.testing.assert_allclose(out["prediction"], ridge.inplace_predict(x[:5].astype(np.float32)), rtol=1e-6)


def test_lightgbm_binary_multiclass_and_regression(tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    binary = lgb({"objective": "binary"}, x, y)
    binary.save_model(str(repository(tmp_path, "cancer", "lightgbm") / "model.txt"))
    iris = load_iris()
    multi = lgb({"objective": "multiclass", "num_class": 3}, iris.data, iris.target)
    multi.save_model(str(repository(tmp_path, "iris", "lightgbm") / "model.txt"))
    d, t = load_diabetes(return_X_y=True)
    regression = lgb({"objective": "regression"}, d, t)
    regression.save_model(str(repository(tmp_path, "diabetes", "lightgbm") / "model.txt"))
    with loaded(tmp_path, "cancer") as version:
        out = version.instances[0].predict({"input": x[:20].astype(np.float32)}, ["label", "probabilities"])
    np.testing.assert_allclose(out["probabilities"][:, 1], binary.predict(x[:20].astype(np.float32)), rtol=1e-5)
    with loaded(tmp_path, "iris") as version:
        assert [s.describe() for s in version.signature.outputs] == ["label INT64 [-1]", "probabilities FP32 [-1, 3]"]
        out = version.instances[0].predict({"input": iris.data[:5].astype(np.float32)}, ["label"])
    assert out["label"].tolist() == multi.predict(iris.data[:5].astype(np.float32)).argmax(axis=1).tolist()
    with loaded(tmp_path, "diabetes") as version:
        out = version.instances[0].predict({"input": d[:5].astype(np.float32)}, ["prediction"])
    np.testing.assert_allclose(out["prediction"], regression.predict(d[:5].astype(np.float32)), rtol=1e-5)


def test_a_booster_directory_without_its_file_says_what_to_save(tmp_path: Path) -> None:
    repository(tmp_path, "empty", "xgboost")
    with pytest.raises(LoadFailed) as raised, loaded(tmp_path, "empty"):
        pass
    assert "none of ['model.json', 'model.ubj'] (save the booster with Booster.save_model)" in str(raised.value)
