"""The first models a newcomer tries, made the way they would make them: the
load error names the fix, not only the problem (issue 19)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from turnout.model.loader import LoadFailed, load_version
from turnout.model.repository import ModelRepository

IRIS_X, IRIS_Y = load_iris(return_X_y=True)


def test_a_classifier_exported_with_zipmap_says_to_export_it_without(tmp_path: Path) -> None:
    """skl2onnx's default export: probabilities as one {class: p} map per row."""
    model = LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)
    version = tmp_path / "iris" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(to_onnx(model, IRIS_X[:1].astype(np.float32)).SerializeToString())
    with pytest.raises(LoadFailed) as failed:
        load_version(ModelRepository(tmp_path).read("iris"), 1)
    message = str(failed.value)
    assert "tensor 'output_probability' has type seq(map(int64,tensor(float)))" in message
    assert "to_onnx(model, X, options={'zipmap': False})" in message


def test_the_export_the_hint_names_loads(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)
    version = tmp_path / "iris" / "1"
    version.mkdir(parents=True)
    onnx_model = to_onnx(model, IRIS_X[:1].astype(np.float32), options={"zipmap": False})
    (version / "model.onnx").write_bytes(onnx_model.SerializeToString())
    loaded = load_version(ModelRepository(tmp_path).read("iris"), 1)
    try:
        assert [spec.name for spec in loaded.signature.outputs] == ["label", "probabilities"]
    finally:
        for instance in loaded.instances:
            instance.close()


def test_a_skops_file_under_the_default_runtime_names_the_sklearn_runtime(tmp_path: Path) -> None:
    version = tmp_path / "forest" / "1"
    version.mkdir(parents=True)
    sio.dump(RandomForestClassifier(n_estimators=3).fit(IRIS_X, IRIS_Y), version / "model.skops")
    with pytest.raises(LoadFailed) as failed:
        load_version(ModelRepository(tmp_path).read("forest"), 1)
    message = str(failed.value)
    assert message.startswith(f"{version / 'model.onnx'}: missing")
    assert "model.skops is read by the 'sklearn' runtime: write runtime = \"sklearn\" in model.toml" in message


def test_a_version_with_nothing_a_runtime_reads_says_only_what_is_missing(tmp_path: Path) -> None:
    version = tmp_path / "empty" / "1"
    version.mkdir(parents=True)
    (version / "notes.txt").write_text("nothing to serve\n")
    with pytest.raises(LoadFailed) as failed:
        load_version(ModelRepository(tmp_path).read("empty"), 1)
    assert str(failed.value) == f"{version / 'model.onnx'}: missing"


def test_a_pipeline_file_under_the_default_runtime_names_the_pipeline_runtime(tmp_path: Path) -> None:
    version = tmp_path / "screening" / "1"
    version.mkdir(parents=True)
    (version / "pipeline.toml").write_text("[[inputs]]\n")
    with pytest.raises(LoadFailed) as failed:
        load_version(ModelRepository(tmp_path).read("screening"), 1)
    assert "pipeline.toml is read by the 'pipeline' runtime: write runtime = \"pipeline\" in model.toml" in str(
        failed.value
    )
