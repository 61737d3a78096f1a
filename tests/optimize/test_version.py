"""``turnout optimize`` on copies of the example models (the command itself,
in-process): each transformation writes a version that serves the same
signature, with its report beside it; the source is never changed; a version
that loses too much is refused and leaves nothing behind; bad input gets a
precise message."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from optimize_data import write as write_data  # examples/ is on the path (tests/conftest.py)

from turnout.cli.main import main
from turnout.model.loader import LoadedVersion, load_version
from turnout.model.repository import ModelRepository


@contextmanager
def loaded_version(root: Path, name: str, version: int) -> Iterator[LoadedVersion]:
    """The version as the server loads it (its instances closed after)."""
    found = load_version(ModelRepository(root).read(name), version)
    try:
        yield found
    finally:
        for instance in found.instances:
            instance.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    write_data(out)
    return out


@pytest.fixture
def models(tmp_path: Path, example_repo: Path) -> Path:
    root = tmp_path / "models"
    for name in ("cancer_risk", "diabetes", "breast_cancer"):
        shutil.copytree(example_repo / name, root / name)
    return root


def digest(directory: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())).hexdigest()


def test_pruning_writes_a_smaller_version_with_its_report(
    models: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = digest(models / "cancer_risk" / "2")
    code = main(["optimize", str(models), "cancer_risk", "--from", "2", "--prune", "0.5",
                 "--calibration", str(data / "cancer_train.npy"), "--validation", str(data / "cancer_test.npz"),
                 "--min-agreement", "0.9"])  # fmt: skip
    assert code == 0
    assert digest(models / "cancer_risk" / "2") == source  # only read
    report = json.loads((models / "cancer_risk" / "3" / "optimize.json").read_text())
    assert report["written"] and report["steps"] == ["pruned 50% of hidden units"]
    assert report["notes"] == ["hidden layer 'next_activations': 32 -> 16 units"]
    assert report["task_metric"]["name"] == "accuracy" and report["task_metric"]["optimized"] > 0.9
    assert report["size_bytes"]["optimized"] < report["size_bytes"]["source"]
    assert set(report["rows_per_second"]) == {"batch 1", "batch 32"}
    assert "agreement" in capsys.readouterr().out
    with loaded_version(models, "cancer_risk", 3) as loaded:  # as the server loads it
        assert [s.name for s in loaded.signature.outputs] == ["label", "probabilities"]


def test_a_version_that_loses_too_much_is_refused_and_nothing_is_left(
    models: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in (models / "cancer_risk").iterdir())
    report_file = models.parent / "refused.json"
    code = main(["optimize", str(models), "cancer_risk", "--from", "2", "--prune", "0.9",
                 "--calibration", str(data / "cancer_train.npy"), "--validation", str(data / "cancer_test.npz"),
                 "--min-agreement", "0.99", "--report", str(report_file)])  # fmt: skip
    assert code == 1
    assert re.search(r"REFUSED: agreement 0\.9[0-9]+ is below --min-agreement 0\.99", capsys.readouterr().out)
    assert sorted(p.name for p in (models / "cancer_risk").iterdir()) == before  # no version, no scratch
    assert json.loads(report_file.read_text())["written"] is False


@pytest.mark.parametrize(
    ("model", "arguments", "validation"),
    [
        ("diabetes", ["--int8", "dynamic"], "diabetes_test.npz"),
        ("diabetes", ["--fp16"], "diabetes_test.npz"),
        ("breast_cancer", ["--graph", "extended"], "breast_cancer_test.npz"),
        ("diabetes", ["--fp16", "--fp16-io", "--to", "7"], "diabetes_test.npz"),
    ],
)
def test_each_transformation_writes_a_version_that_loads(
    models: Path, data: Path, model: str, arguments: list[str], validation: str
) -> None:
    next_free = max(int(p.name) for p in (models / model).iterdir() if p.name.isdigit()) + 1
    code = main(["optimize", str(models), model, "--from", "1", *arguments, "--validation", str(data / validation)])
    assert code == 0
    version = 7 if "--to" in arguments else next_free
    report = json.loads((models / model / str(version) / "optimize.json").read_text())
    assert report["written"] and report["agreement"] > 0.9
    with loaded_version(models, model, version) as loaded:
        fp16_io = "--fp16-io" in arguments
        assert all(s.datatype == ("FP16" if fp16_io else "FP32") for s in loaded.signature.inputs)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from", "2"], "nothing to do"),
        (["--from", "9", "--prune", "0.5"], "has no version 9"),
        (["--from", "2", "--prune", "1.5"], "between 0 and 1"),
        (["--from", "2", "--int8", "static", "--validation", "cancer_test.npz"], "give --calibration"),
        (["--from", "2", "--prune", "0.5"], "give --validation"),
        (["--from", "2", "--prune", "0.5", "--to", "1", "--validation", "cancer_test.npz"], "exists"),
        (["--from", "2", "--prune", "0.5", "--to", "0", "--validation", "cancer_test.npz"], "numbered from 1"),
        (["--from", "2", "--int8", "dynamic", "--fp16", "--validation", "cancer_test.npz"], "one or the other"),
        (["--from", "2", "--prune", "0.5", "--validation", "diabetes_test.npz"], "shape [111, 10]"),
    ],
)
def test_bad_requests_get_a_precise_message_and_write_nothing(
    models: Path, data: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [str(data / a) if a.endswith(".npz") else a for a in arguments]
    assert main(["optimize", str(models), "cancer_risk", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (models / "cancer_risk").iterdir()) == ["1", "2", "model.toml"]


def test_fp16_inputs_are_refused_where_model_toml_declares_fp32(
    models: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["optimize", str(models), "breast_cancer", "--from", "1", "--fp16", "--fp16-io",
                 "--validation", str(data / "breast_cancer_test.npz")]) == 2  # fmt: skip
    assert "leave out --fp16-io" in capsys.readouterr().err


def test_a_model_that_is_not_onnx_is_refused(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "models"
    (root / "custom" / "1").mkdir(parents=True)
    (root / "custom" / "1" / "model.py").write_text("")
    (root / "custom" / "model.toml").write_text('runtime = "python"\ntrusted = true\n')
    assert main(["optimize", str(root), "custom", "--from", "1", "--graph", "basic",
                 "--validation", str(data / "cancer_test.npz")]) == 2  # fmt: skip
    assert "works on ONNX models" in capsys.readouterr().err


def test_a_payload_log_is_a_calibration_set(models: Path, data: Path, tmp_path: Path) -> None:
    rows = np.load(data / "diabetes_test.npz")["input"][:20]
    log = tmp_path / "payloads.jsonl"
    lines = [
        {
            "model": "diabetes",
            "version": "1",
            "outputs": {},
            "inputs": {"input": {"datatype": "FP32", "shape": [1, 10], "data": [row.tolist()]}},
        }
        for row in rows
    ]
    lines.append({**lines[0], "model": "wine"})  # another model's request: not taken
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))  # fmt: skip
    assert main(["optimize", str(models), "diabetes", "--from", "1", "--int8", "static",
                 "--calibration", str(log)]) == 0  # fmt: skip
    report = json.loads((models / "diabetes" / "2" / "optimize.json").read_text())
    assert report["validation_rows"] == 20 and report["steps"] == ["int8 static"]


def test_static_int8_takes_a_scikit_learn_mlp(models: Path, data: Path) -> None:
    """ONNX Runtime's quantizer fails on the Gemm a scikit-learn MLP prepares into unless one
    of its adjustments is off: the retry without it (transforms.int8_static)."""
    arguments = ["--calibration", str(data / "cancer_train.npy"), "--validation", str(data / "cancer_test.npz")]
    assert main(["optimize", str(models), "cancer_risk", "--from", "2", "--int8", "static", *arguments]) == 0
    report = json.loads((models / "cancer_risk" / "3" / "optimize.json").read_text())
    assert report["agreement"] >= 0.95


def test_killed_mid_work_it_leaves_no_version_and_the_repository_loads(tmp_path: Path, data: Path) -> None:
    """SIGKILL while MiniLM is being quantized: the version was never moved into place, so the
    repository reads as before (the hidden scratch directory left behind is no version)."""
    import build_models  # examples/ is on the path (tests/conftest.py)

    root = tmp_path / "models"
    build_models._build_text_pipeline(root)
    command = [sys.executable, "-m", "turnout", "optimize", str(root), "minilm", "--from", "1", "--int8", "static",
               "--calibration", str(data / "minilm_calibration.npz"),
               "--validation", str(data / "minilm_validation.npz")]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".optimize-") for p in (root / "minilm").iterdir()):
            assert child.poll() is None and time.monotonic() < deadline, "it never started writing"
            time.sleep(0.05)  # a child's files: nothing to wait on but polling
        time.sleep(2.0)  # well into the quantization (about 40 s in all)
    finally:
        child.kill()
        child.wait()
    assert ModelRepository(root).read("minilm").on_disk == (1,)
    with loaded_version(root, "minilm", 1) as loaded:
        assert [s.name for s in loaded.signature.outputs] == ["sentence_embedding"]
