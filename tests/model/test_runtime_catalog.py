"""Finding runtimes by name: built in, from the ``turnout.runtimes`` entry
point group, or ``module:Class`` for trusted models on a server that allows
them. The in-process half; ``tests/integration/test_runtime_plugins.py``
serves requests through both kinds of plug-in."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from turnout.model.runtimes.catalog import RuntimeCatalog, RuntimeNotFound
from turnout.model.runtimes.onnx import OnnxRuntime

PACK = Path(__file__).parents[1] / "integration" / "runtime_pack"


@pytest.fixture
def pack_on_path(tmp_path: Path) -> Iterator[Path]:
    """The runtime pack importable, with an entry point, as an installed distribution would be."""
    info = tmp_path / "pack-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pack\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[turnout.runtimes]\nscaling = scaling_runtime:ScalingRuntime\n"
                                           "broken = scaling_runtime:Missing\n")  # fmt: skip
    sys.path[:0] = [str(tmp_path), str(PACK)]
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.path.remove(str(PACK))
        sys.modules.pop("scaling_runtime", None)


def test_onnx_is_built_in_and_built_once() -> None:
    catalog = RuntimeCatalog()
    assert isinstance(catalog.find("onnx"), OnnxRuntime)
    assert catalog.find("onnx") is catalog.find("onnx")


def test_an_unknown_name_lists_what_there_is() -> None:
    listed = r"unknown runtime 'tf'; one of \['lightgbm', 'onnx', 'python', 'pytorch', 'sklearn', 'xgboost'\]"
    with pytest.raises(RuntimeNotFound, match=listed):
        RuntimeCatalog().find("tf")


def test_entry_points_add_runtimes_without_consent(pack_on_path: Path) -> None:
    catalog = RuntimeCatalog()
    assert catalog.names() == ["broken", "lightgbm", "onnx", "python", "pytorch", "scaling", "sklearn", "xgboost"]
    assert type(catalog.find("scaling")).__name__ == "ScalingRuntime"
    with pytest.raises(RuntimeNotFound, match=r"runtime 'broken' \(scaling_runtime:Missing\) cannot be imported"):
        catalog.find("broken")


@pytest.mark.parametrize(("trusted", "allowed"), [(False, False), (True, False), (False, True)])
def test_a_class_path_runs_code_so_it_needs_both_consents(pack_on_path: Path, trusted: bool, allowed: bool) -> None:
    with pytest.raises(RuntimeNotFound, match="imports and runs code from that module: refused without"):
        RuntimeCatalog(allow_trusted_models=allowed).find("scaling_runtime:ShoutingRuntime", trusted=trusted)
    assert "scaling_runtime" not in sys.modules  # refused before anything was imported


def test_a_class_path_for_a_trusted_model_on_a_server_that_allows_it(pack_on_path: Path) -> None:
    catalog = RuntimeCatalog(allow_trusted_models=True)
    assert type(catalog.find("scaling_runtime:ShoutingRuntime", trusted=True)).__name__ == "ShoutingRuntime"
    with pytest.raises(RuntimeNotFound, match="refused without `trusted = true`"):
        catalog.find("scaling_runtime:ShoutingRuntime", trusted=False)  # built already, still refused
    with pytest.raises(RuntimeNotFound, match="has no class 'Nope'"):
        catalog.find("scaling_runtime:Nope", trusted=True)
    with pytest.raises(RuntimeNotFound, match="is a ScalingOptions, not a turnout ModelRuntime"):
        catalog.find("scaling_runtime:ScalingOptions", trusted=True)


def test_a_pipeline_outside_a_server_says_where_it_runs() -> None:
    with pytest.raises(RuntimeNotFound, match=r"runtime 'pipeline' runs only inside `turnout serve`"):
        RuntimeCatalog().find("pipeline")
