"""The audit log under SIGKILL: a server killed while it writes and rotates
its audit log, again and again, leaves only whole JSON lines, in at most
``--audit-log-keep`` rotated files plus the live one, and the next server
goes on appending to it."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import httpx

from tests.support import ServerProcess

KEEP = 3


def flood(url: str, stop: threading.Event) -> None:
    """Requests with a wrong key, as fast as they are answered: each a failure to audit."""
    with httpx.Client(timeout=2.0) as client:
        while not stop.is_set():
            try:
                client.get(f"{url}/v2/models/breast_cancer", headers={"Authorization": "Bearer tnt_bad_bad"})
            except httpx.TransportError:
                return  # the server was killed


def audit_files(audit: Path) -> list[Path]:
    return sorted(audit.parent.glob(audit.name + "*"))


def test_sigkill_while_the_audit_log_rotates_leaves_whole_lines(example_repo: Path, tmp_path: Path) -> None:
    audit = tmp_path / "audit" / "audit.log"
    chance = random.Random(15)
    for cycle in range(4):
        (tmp_path / f"run-{cycle}").mkdir()
        server = ServerProcess(
            example_repo,
            "--audit-log", str(audit),
            "--audit-log-max-bytes", "2048",  # a rotation every few lines
            "--audit-log-keep", str(KEEP),
            log_dir=tmp_path / f"run-{cycle}",
            inference_auth=True,
        )  # fmt: skip
        server.start()
        stop = threading.Event()
        flooders = [threading.Thread(target=flood, args=(server.url, stop)) for _ in range(4)]
        for thread in flooders:
            thread.start()
        time.sleep(chance.uniform(0.3, 1.2))  # killed at a moment of its own: in a write or a rename, or between
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        stop.set()
        for thread in flooders:
            thread.join()

    files = audit_files(audit)
    assert len(files) <= KEEP + 1, files
    lines = [line for path in files for line in path.read_text().splitlines()]
    assert len(lines) > 20, "the flood was audited"
    for line in lines:
        event = json.loads(line)  # every line whole: each is one write, each rotation step a rename
        assert event["action"].startswith("authenticate"), event
    assert all(path.stat().st_size <= 2048 for path in files)

    # the next server appends to the same log
    (tmp_path / "last").mkdir()
    last = ServerProcess(example_repo, "--audit-log", str(audit), log_dir=tmp_path / "last", inference_auth=True)
    with last:
        before = audit.read_text() if audit.exists() else ""
        assert httpx.get(f"{last.url}/v2/health/ready").status_code == 200
        refused = httpx.get(f"{last.url}/v2/models/breast_cancer", headers={"Authorization": "Bearer x"})
        assert refused.status_code == 401
        deadline = time.monotonic() + 5
        while audit.read_text() == before and time.monotonic() < deadline:
            time.sleep(0.05)  # the record is written on the server's loop, after the answer
        assert audit.read_text().startswith(before) and audit.read_text() != before
