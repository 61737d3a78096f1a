"""The README's "Running several replicas", as printed: three replicas of the
example models and the gateway of examples/gateway started by its commands,
the answer it prints through the gateway, then a replica stopped and the
answers going on. Only the ports (free ones for 8100-8123) and the state
directories (under the test's own) differ from a newcomer's terminal."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import build_models  # examples/ is on the path (tests/conftest.py)
import httpx

from tests.integration.test_readme import README, approximately, block_after
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Running several replicas"


def test_the_replicas_section_runs_as_printed(tmp_path: Path) -> None:
    workdir = tmp_path / "checkout"
    build_models.build(workdir / "examples" / "models", text=False)
    shutil.copytree(ROOT / "examples" / "gateway", workdir / "examples" / "gateway")
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    start = README.index(SECTION)
    block = block_after(SECTION, "sh")
    ports = {port: str(free_port()) for port in sorted(set(re.findall(r"\b81[0-2][0-3]\b", block)))}

    def local(text: str) -> str:
        text = re.sub(r"\b81[0-2][0-3]\b", lambda m: ports.get(m.group(0), m.group(0)), text)
        return text.replace("/tmp/turnout-", f"{tmp_path}/turnout-")

    remote = workdir / "examples" / "gateway" / "diabetes" / "1" / "remote.toml"
    remote.write_text(local(remote.read_text()))
    with (tmp_path / "servers.log").open("wb") as log:  # the child keeps its own descriptor
        shell = subprocess.Popen(
            ["bash", "-c", local(block) + "wait\n"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert shell.stdout is not None
    try:
        printed = b""
        while b"model_name" not in printed or not printed.rstrip().endswith(b"}"):
            chunk = os.read(shell.stdout.fileno(), 65536)
            assert chunk, (printed, (tmp_path / "servers.log").read_text()[-3000:])
            printed += chunk
        expected = block_after(SECTION, "json").strip()
        ready, _, answer = printed.decode().partition("}")
        assert ready + "}" == expected.partition("}")[0] + "}"
        assert approximately(json.loads(answer)) == json.loads(expected.partition("}")[2])
        assert "kill %2" in README[start : README.index("## Monitoring", start)]
        # one replica stopped: the answers go on from the other two
        replica = int(subprocess.check_output(["pgrep", "-f", "--", f"--http-port {ports['8102']}"]).split()[0])
        os.kill(replica, signal.SIGTERM)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0.01] * 10}]}
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['8100']}", timeout=30) as client:
            for _ in range(30):
                assert client.post("/v2/models/diabetes/infer", json=body).status_code == 200
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        shell.wait(timeout=60)
        shell.stdout.close()
