"""deploy/haproxy/turnout.cfg, as shipped, in front of a real server: what
passes, what is refused at once (503, Retry-After, turnout's JSON shape),
and what waited too long in HAProxy's queue. A real HAProxy (Debian's,
installed by scripts/system-deps.sh)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.reference import run
from tests.integration.slow_client import SLOW_INPUT, post_slow, slow_output
from tests.integration.test_readme import block_after
from tests.support import ServerProcess, free_port

pytestmark = [pytest.mark.programs("haproxy")]
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "turnout.cfg"
AT_CAPACITY = "the server is at capacity; retry later"


@contextmanager
def door(server: ServerProcess, in_flight: int, queue: int, log: Path) -> Iterator[str]:
    """HAProxy with the shipped configuration in front of ``server``: its URL."""
    settings = {"TURNOUT_HTTP": f"127.0.0.1:{server.http_port}", "TURNOUT_IN_FLIGHT": str(in_flight),
                "TURNOUT_QUEUE": str(queue)}  # fmt: skip
    with haproxy(CONFIG, settings, log) as url:
        yield url


@contextmanager
def haproxy(config: Path, settings: dict[str, str], log: Path) -> Iterator[str]:
    """A real HAProxy with ``config`` and its ``settings`` (environment
    variables), listening on a free port given as TURNOUT_DOOR: its URL."""
    program = shutil.which("haproxy")
    assert program is not None, "haproxy is missing: scripts/system-deps.sh installs it"
    port = free_port()
    env = {**os.environ, **settings, "TURNOUT_DOOR": f"127.0.0.1:{port}"}
    check = subprocess.run([program, "-c", "-f", str(config)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with log.open("wb") as output:
        process = subprocess.Popen([program, "-f", str(config), "-db"], env=env, stdout=output, stderr=output)
    try:
        wait_for(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "HAProxy did not listen within 20 s"
            time.sleep(0.05)  # polling a child process's port: there is no event to wait on


def test_the_readme_command(server: ServerProcess, tmp_path: Path) -> None:
    """The README's HAProxy line, as printed (addresses aside), in front of a server."""
    block = block_after("**A door in front, for heavier overload.**", "sh")
    line = next(line for line in block.splitlines() if line.strip().endswith("deploy/haproxy/turnout.cfg"))
    port = free_port()
    command = (
        line.replace("0.0.0.0:8080", f"127.0.0.1:{port}")
        .replace("127.0.0.1:9080", f"127.0.0.1:{server.http_port}")
        .replace("deploy/haproxy/turnout.cfg", str(CONFIG))
    )
    log = tmp_path / "haproxy.log"
    with log.open("wb") as output:
        # its own process group: bash and the HAProxy it starts stop together
        process = subprocess.Popen(["bash", "-c", command], stdout=output, stderr=output, start_new_session=True)
    try:
        wait_for(port, process, log)
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
        assert post_slow(f"http://127.0.0.1:{port}").status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_the_door_passes_health_metadata_and_inference(server: ServerProcess, test_repo: Path, tmp_path: Path) -> None:
    with door(server, in_flight=64, queue=64, log=tmp_path / "haproxy.log") as url:
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{url}/v2/models/slow").json()["name"] == "slow"
        response = post_slow(url)
        assert response.status_code == 200, response.text
        expected = run(test_repo / "slow" / "1" / "model.onnx", {"x": SLOW_INPUT})["y"]
        np.testing.assert_allclose(slow_output(response), expected, rtol=1e-5)


def test_inference_past_the_door_is_refused_at_once_in_turnouts_shape(server: ServerProcess, tmp_path: Path) -> None:
    # slow (~50 ms a request) with one request at turnout and one waiting in
    # HAProxy: of 8 at once, the rest are refused by HAProxy without waiting
    with door(server, in_flight=1, queue=1, log=tmp_path / "haproxy.log") as url, ThreadPoolExecutor(8) as pool:
        started = time.monotonic()
        responses = list(pool.map(lambda _: (post_slow(url), time.monotonic() - started), range(8)))
        health = httpx.get(f"{url}/v2/health/ready", timeout=5)
    assert health.status_code == 200  # never refused: only inference is
    served = [r for r, _ in responses if r.status_code == 200]
    refused = [(r, took) for r, took in responses if r.status_code == 503]
    assert len(served) + len(refused) == 8, [r.text for r, _ in responses]
    assert len(served) >= 2 and refused, [r.status_code for r, _ in responses]
    slowest_served = max(took for r, took in responses if r.status_code == 200)
    for response, took in refused:
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": AT_CAPACITY}
        assert took < slowest_served  # answered at once, not after waiting its turn


def test_a_request_that_outwaits_the_queue_gets_turnouts_answer(server: ServerProcess, tmp_path: Path) -> None:
    # one at turnout, a long queue: enough requests for 4 s of work (timed here:
    # ~50 ms each on one machine, ~25 on a faster one), so the last ones wait
    # past HAProxy's `timeout queue` (1 s) even if the flood runs twice as fast
    # as the timing did (a clean CI run with 2.5 s of work answered every request)
    took = []
    for _ in range(5):
        started = time.monotonic()
        assert post_slow(server.url).status_code == 200
        took.append(time.monotonic() - started)
    count = max(60, math.ceil(4.0 / min(took)))
    with door(server, in_flight=1, queue=1000, log=tmp_path / "haproxy.log") as url, ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(lambda _: post_slow(url), range(count)))
    timed_out = [r for r in responses if r.status_code == 503]
    assert timed_out, [r.status_code for r in responses]
    assert all(r.status_code in (200, 503) for r in responses)
    for response in timed_out:
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"error": AT_CAPACITY}
