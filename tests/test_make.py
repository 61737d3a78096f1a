"""The README's two commands (issue 19): `make serve` installs what serving
and the example models need, never the test tools (Ray, MLflow, torch,
playwright: 1.6 GB, minutes on a fresh machine); `make test` adds them."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def planned(target: str, venv: Path) -> str:
    """What make would run for ``target`` on a machine with no virtual environment yet."""
    return subprocess.run(
        ["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def test_make_serve_installs_no_test_tools(tmp_path: Path) -> None:
    commands = planned("serve", tmp_path / "venv")
    installs = [line for line in commands.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
    assert any("-e '.[examples]'" in line for line in installs)
    assert not [line for line in installs if "[dev]" in line]
    assert "turnout serve examples/models" in commands


def test_make_test_installs_the_test_tools_and_system_programs(tmp_path: Path) -> None:
    commands = planned("test", tmp_path / "venv")
    assert "-e '.[dev]'" in commands
    assert "scripts/system-deps.sh" in commands
    assert commands.index("ruff check") < commands.index("scripts/system-deps.sh") < commands.index("-m pytest")
