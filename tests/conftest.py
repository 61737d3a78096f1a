"""Shared fixtures: the example repository (built from scikit-learn data, as
`make models` builds it), test-only models beside it, and a running server."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.onnx_models import fixed_shape, identity_all_types, slow, write_model
from tests.support import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import build_models  # noqa: E402 - the example builder lives in examples/, not in the package

# Programs the suite runs beyond Python: scripts/system-deps.sh installs them, some
# into the virtual environment's bin (never as system services), so it goes first on PATH.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
PROGRAMS_OF_MARK = {"redis": ("redis-server",), "browser": ("chromium",)}
MISSING = pytest.StashKey[dict[str, int]]()


def needed_programs(item: pytest.Item) -> set[str]:
    names = {name for mark, programs in PROGRAMS_OF_MARK.items() if item.get_closest_marker(mark) for name in programs}
    for mark in item.iter_markers("programs"):
        names.update(mark.args)
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration starts real servers: marked so (`make test-fast` leaves it out).
    A test whose program is missing here is left out, never skipped, and the run fails
    at its end naming the program: everything else still runs."""
    kept, left_out = [], []
    missing: dict[str, int] = {}
    for item in items:
        if item.path.is_relative_to(ROOT) and "integration" in item.path.relative_to(ROOT).parts:
            item.add_marker(pytest.mark.integration)
        absent = sorted(name for name in needed_programs(item) if shutil.which(name) is None)
        for name in absent:
            missing[name] = missing.get(name, 0) + 1
        (left_out if absent else kept).append(item)
    config.stash[MISSING] = missing
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    missing = session.config.stash.get(MISSING, {})
    if missing:
        names = ", ".join(f"{name} ({count} tests)" for name, count in sorted(missing.items()))
        sys.stderr.write(f"\nNOT RUN, programs missing: {names}; install them with scripts/system-deps.sh as root\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def example_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the example repository as `make models` builds it, less
    the text pipeline and its 90 MB model (tests/integration/test_pipelines.py
    builds those), since many tests copy this repository."""
    root = tmp_path_factory.mktemp("examples") / "models"
    build_models.build(root, text=False)
    return root


@pytest.fixture(scope="session")
def test_repo(tmp_path_factory: pytest.TempPathFactory, example_repo: Path) -> Path:
    """The examples plus models that exercise datatypes, fixed shapes, slowness
    and broken directories."""
    root = tmp_path_factory.mktemp("repo") / "models"
    build_models.build(root, text=False)
    write_model(root / "all_types" / "1" / "model.onnx", identity_all_types())
    (root / "all_types" / "model.toml").write_text("max_batch_size = 8\n[instances]\ncount = 2\n")
    write_model(root / "fixed" / "1" / "model.onnx", fixed_shape())
    write_model(root / "slow" / "1" / "model.onnx", slow())
    (root / "slow" / "model.toml").write_text(
        "max_batch_size = 1\n[batching]\nmax_queue_size = 1\n[runtime.options]\nintra_op_threads = 1\n"
    )
    write_model(root / "slow_queue" / "1" / "model.onnx", slow())
    (root / "slow_queue" / "model.toml").write_text("max_batch_size = 1\n[batching]\nmax_queue_size = 16\n")
    broken = root / "broken_file" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx model")
    bad_config = root / "bad_config"
    write_model(bad_config / "1" / "model.onnx", fixed_shape())
    (bad_config / "model.toml").write_text("max_batch_sise = 4\n")
    return root


@pytest.fixture
def repo(tmp_path: Path, example_repo: Path) -> Path:
    """A copy of the example repository that a test may change."""
    root = tmp_path / "models"
    shutil.copytree(example_repo, root)
    return root


@pytest.fixture(scope="session")
def server(test_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the read-only integration tests (small body limit to test 413)."""
    process = ServerProcess(
        test_repo, "--no-strict-readiness", "--max-body-bytes", "1000000", log_dir=tmp_path_factory.mktemp("logs")
    )
    with process:
        yield process


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
