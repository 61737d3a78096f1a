"""The sklearn runtime in-process, on estimators trained on scikit-learn's
bundled data: a classifier answers labels and probabilities equal to the
estimator's own, a regressor its predictions, text classes come back as
BYTES, names can be changed, and skops' refusals (an untrusted type, a
pickle) say what to do."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge

from tests.model.loading_support import loaded
from turnout.model.loader import LoadFailed

TREE = "sklearn.tree._tree.Tree"


def saved(root: Path, name: str, estimator: Any, options: str = "") -> Path:
    version = root / name / "1"
    version.mkdir(parents=True)
    sio.dump(estimator, version / "model.skops")
    (root / name / "model.toml").write_text(f'runtime.name = "sklearn"\n[runtime.options]\n{options}')
    return root


def test_a_forest_answers_its_own_labels_and_probabilities(tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    with loaded(saved(tmp_path, "forest", forest, f'trusted_types = ["{TREE}"]\n'), "forest") as version:
        described = [s.describe() for s in (*version.signature.inputs, *version.signature.outputs)]
        assert described == ["input FP32 [-1, 30]", "label INT64 [-1]", "probabilities FP32 [-1, 2]"]
        rows = x[:50].astype(np.float32)
        out = version.instances[0].predict({"input": rows}, ["label", "probabilities"])
    assert out["label"].tolist() == forest.predict(rows).tolist()
    np.testing.assert_allclose(out["probabilities"], forest.predict_proba(rows), rtol=1e-6)


def test_an_untrusted_type_is_refused_with_the_line_that_trusts_it(tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    with pytest.raises(LoadFailed) as raised, loaded(saved(tmp_path, "forest", forest), "forest"):
        pass
    assert f'[runtime.options] trusted_types = ["{TREE}"]' in str(raised.value)


def test_a_regressor_answers_predictions(tmp_path: Path) -> None:
    x, y = load_diabetes(return_X_y=True)
    ridge = Ridge().fit(x, y)
    with loaded(saved(tmp_path, "ridge", ridge), "ridge") as version:
        assert [s.describe() for s in version.signature.outputs] == ["prediction FP32 [-1]"]
        out = version.instances[0].predict({"input": x[:5].astype(np.float32)}, ["prediction"])
    np.testing.assert_allclose(out["prediction"], ridge.predict(x[:5].astype(np.float32)), rtol=1e-5)


def test_text_classes_are_bytes_and_names_can_change(tmp_path: Path) -> None:
    iris = load_iris()
    labels = iris.target_names[iris.target]  # "setosa", ...
    model = LogisticRegression(max_iter=500).fit(iris.data, labels)
    options = 'input_datatype = "FP64"\nnames = { label = "species", probabilities = "p" }\n'
    with loaded(saved(tmp_path, "iris", model, options), "iris") as version:
        described = [s.describe() for s in (*version.signature.inputs, *version.signature.outputs)]
        assert described == ["input FP64 [-1, 4]", "species BYTES [-1]", "p FP32 [-1, 3]"]
        out = version.instances[0].predict({"input": iris.data[:3]}, ["species"])
    assert out["species"].tolist() == [b"setosa"] * 3


def test_a_pickle_never_loads_here(tmp_path: Path) -> None:
    version = tmp_path / "pickled" / "1"
    version.mkdir(parents=True)
    (version / "model.pkl").write_bytes(pickle.dumps(Ridge()))
    (tmp_path / "pickled" / "model.toml").write_text('runtime = "sklearn"\n')
    with pytest.raises(LoadFailed) as raised, loaded(tmp_path, "pickled"):
        pass
    assert "model.skops: missing; model.pkl is" in str(raised.value)
