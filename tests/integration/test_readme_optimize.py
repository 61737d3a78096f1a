"""The README's "Optimizing a model" as printed: its commands on a copy of the
example models (MiniLM included) with the data examples/optimize_data.py
builds; each report is written, MiniLM's int8 static holds the figure's bar
(agreement >= 0.98, faster), and the refusal the README quotes is what the
command prints. Only /tmp/turnout-* moves under the test's directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import build_models  # examples/ is on the path (tests/conftest.py)
import pytest

from tests.integration.test_readme import README, block_after

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Optimizing a model: `turnout optimize`"
pytestmark = [pytest.mark.integration, pytest.mark.subprocess, pytest.mark.timeout(600)]


def test_the_optimize_section_runs_as_printed(tmp_path: Path) -> None:
    workdir = tmp_path / "checkout"
    build_models.build(workdir / "examples" / "models", text=True)
    for name in ("optimize_data.py", "minilm_onnx.py"):
        shutil.copy(ROOT / "examples" / name, workdir / "examples" / name)
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    block = block_after(SECTION, "sh").replace("/tmp/turnout-", f"{tmp_path}/turnout-")
    done = subprocess.run(["bash", "-ec", block], cwd=workdir, capture_output=True, text=True, timeout=540,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    reports = done.stdout.split("\n  written\n")
    assert len(reports) == 5 and reports[-1].strip() == "", done.stdout  # four written
    printed = block_after(SECTION, "text")
    first = reports[0]
    assert first.splitlines()[0] == printed.splitlines()[0]  # "minilm: version 1 -> 2 (int8 static), 1000 ..."
    agreement = float(re.search(r"cosine ([0-9.]+)", first).group(1))  # type: ignore[union-attr]
    speedup = float(re.search(r"rows/s at batch 32: .*\(([0-9.]+)x\)", first).group(1))  # type: ignore[union-attr]
    assert agreement >= 0.98 and speedup > 1.0, first
    optimized = tmp_path / "turnout-optimize"
    for model, version in (("minilm", 2), ("cancer_risk", 3), ("diabetes", 2), ("breast_cancer", 3)):
        assert (optimized / model / str(version) / "optimize.json").is_file()

    refused = subprocess.run(
        [sys.executable, "-m", "turnout", "optimize", str(optimized), "cancer_risk", "--from", "2", "--prune", "0.9",
         "--calibration", f"{tmp_path}/turnout-data/cancer_train.npy",
         "--validation", f"{tmp_path}/turnout-data/cancer_test.npz", "--min-agreement", "0.99"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1
    quoted = re.search(r"`REFUSED: agreement ([0-9.]+) is below --min-agreement 0.99`", README).group(1)  # type: ignore[union-attr]
    found = re.search(r"REFUSED: agreement ([0-9.]+) is below --min-agreement 0.99", refused.stdout)
    assert found, refused.stdout
    assert abs(float(found.group(1)) - float(quoted)) <= 0.015  # a label or two may fall the other way on another CPU
    assert "32 -> 3 units" in refused.stdout  # "removes 29 of its 32 hidden units"
    assert not (optimized / "cancer_risk" / "4").exists()
