"""scripts/system-deps.sh, which `make test` runs (issue 19): it never installs
a package that ships a system service (on a systemd host, apt would enable
and start redis-server, Prometheus and HAProxy), and without root it names
what is missing and lets the run go on; the suite then leaves out the tests
that need it, runs the rest, and fails naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system-deps.sh"
BASICS = ("bash", "realpath", "awk", "sort", "mktemp", "rm", "id", "apt-cache", "apt-get", "dpkg-deb", "install", "ln")
SERVICE_PACKAGES = {"redis-server", "prometheus", "haproxy"}


def bare_path(tmp_path: Path) -> str:
    """A PATH with the shell's basics and none of the programs the script provides."""
    tools = tmp_path / "basics"
    tools.mkdir()
    for name in BASICS:
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    return str(tools)


def test_what_it_installs_ships_no_service(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    planned = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(bin_dir)],
        env={**os.environ, "PATH": bare_path(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    install = planned.splitlines()[0].removeprefix("install: ").split()
    taken_out = planned.splitlines()[1].removeprefix("take out: ").split()
    assert {"curl", "openssl", "chromium", "redis-tools"} <= set(install)
    assert not SERVICE_PACKAGES & set(install)
    assert {item.split(":")[0] for item in taken_out} == {"prometheus", "haproxy"}
    # the packages it installs are installed here: none holds a unit or an init script
    for package in sorted(set(install)):
        files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
        services = [f for f in files.splitlines() if f.startswith(("/lib/systemd/system/", "/etc/init.d/"))]
        services = [f for f in services if f.endswith((".service", ".socket", ".timer")) or "/init.d/" in f]
        assert not services, f"{package} ships {services}"
    assert list(bin_dir.iterdir()) == []  # a dry run changes nothing


def test_without_root_it_names_what_is_missing_and_does_not_stop_make() -> None:
    # the other user reads the script from a directory it may enter (pytest's own are private)
    with tempfile.TemporaryDirectory() as shared:
        Path(shared).chmod(0o755)
        script = Path(shared) / "system-deps.sh"
        shutil.copy(SCRIPT, script)
        script.chmod(0o755)
        bin_dir = Path(shared) / "bin"
        bin_dir.mkdir(mode=0o755)
        result = run_as_another_user(script, bin_dir, bare_path(Path(shared)))
        assert list(bin_dir.iterdir()) == []
    assert result.returncode == 0, result.stderr
    assert "missing system packages: curl openssl chromium redis-tools prometheus haproxy" in result.stderr
    assert "the tests that need them are left out, and the run fails" in result.stderr


def run_as_another_user(script: Path, bin_dir: Path, path: str) -> subprocess.CompletedProcess[str]:
    """As nobody where this runs as root; as this user otherwise (not root either)."""
    as_nobody = (
        [shutil.which("setpriv") or "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if os.geteuid() == 0
        else []
    )
    return subprocess.run(
        [*as_nobody, "bash", str(script), str(bin_dir)],
        env={"PATH": path, "HOME": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_missing_program_leaves_its_tests_out_runs_the_rest_and_fails_the_run(tmp_path: Path) -> None:
    """The suite's own hooks (tests/conftest.py) on two tests, one of which needs a program no machine has."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems, pytest_sessionfinish  # noqa: F401\n"
    )
    (tmp_path / "test_two.py").write_text(
        "import pytest\n\n\n"
        "@pytest.mark.programs('turnout-no-such-program')\n"
        "def test_needs_it():\n    raise AssertionError('left out, never run')\n\n\n"
        "def test_plain():\n    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT RUN, programs missing: turnout-no-such-program (1 tests)" in result.stderr
    assert "1 passed, 1 deselected" in result.stdout
