"""The response cache's shared level: two replicas with one Redis
(``--cache-redis``, ``[cache] shared = true``). An answer computed on one is
served by the other without running its model; a dead Redis costs a miss,
never a failed or a slow request; a version's files name its keys."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.test_response_cache import COUNTING, lookups
from tests.support import RedisServer, ServerProcess, free_port
from turnout.serving.shared_cache import decode, encode

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.programs("redis-server")]


def test_a_record_round_trips_and_a_foreign_one_is_ignored() -> None:
    outputs = {"y": np.arange(6, dtype=np.float32).reshape(2, 3), "label": np.array([1, 0], dtype=np.int64)}
    record = encode(outputs)
    assert record is not None
    back = decode(record)
    assert back is not None and {k: v.tolist() for k, v in back.items()} == {k: v.tolist() for k, v in outputs.items()}
    assert decode(record[:-1]) is None  # damaged: a miss, not garbage
    assert decode(record.replace(b'"v":1', b'"v":9')) is None  # another format
    assert encode({"text": np.array([b"a"], dtype=object)}) is None  # text stays in the replica's level


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[RedisServer, ServerProcess, ServerProcess]]:
    root = tmp_path / "models"
    (root / "counting" / "1").mkdir(parents=True)
    (root / "counting" / "1" / "model.py").write_text(COUNTING)
    (root / "counting" / "model.toml").write_text(
        'runtime = "python"\ntrusted = true\nmax_batch_size = 8\n[cache]\nenabled = true\nshared = true\n'
    )
    with RedisServer(tmp_path / "redis") as redis:
        arguments = ("--allow-trusted-models", "--cache-redis", redis.url)
        with ServerProcess(root, *arguments, log_dir=tmp_path / "a") as first, \
                ServerProcess(root, *arguments, log_dir=tmp_path / "b") as second:  # fmt: skip
            yield redis, first, second


def runs(server: ServerProcess, row: list[float], **parameters: object) -> float:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [row]}], "parameters": parameters}
    answer = httpx.post(f"{server.url}/v2/models/counting/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return float(answer.json()["outputs"][0]["data"][0])


def test_an_answer_made_on_one_replica_is_served_by_the_other(
    replicas: tuple[RedisServer, ServerProcess, ServerProcess],
) -> None:
    redis, first, second = replicas
    before = runs(second, [0.0, 0.0], cache=False)  # how many times the second replica's model has run
    made = runs(first, [1.0, 2.0])
    deadline = time.monotonic() + 5
    while lookups(second, "counting").get("shared_hit", 0) < 1:  # the write to Redis goes in the background
        assert runs(second, [1.0, 2.0]) == made, "the second replica ran its model for an answer Redis had"
        assert time.monotonic() < deadline, "never served from the shared level"
    assert runs(second, [1.0, 2.0]) == made and lookups(second, "counting").get("hit", 0) >= 1  # now its own level
    assert runs(second, [5.0, 5.0]) == before + 1  # a new request: its model runs, for the first time since

    redis.process.kill()  # type: ignore[union-attr]
    redis.process.wait()  # type: ignore[union-attr]
    for value in range(10):  # misses now: answered, and not held up by a dead Redis
        began = time.monotonic()
        assert runs(first, [9.0, float(value)]) > made
        assert time.monotonic() - began < 0.5
    assert "shared response cache: Redis failed" in first.log_path.read_text()


def test_a_cache_url_that_is_not_redis_stops_the_server_at_start(example_repo: Path) -> None:
    command = [sys.executable, "-m", "turnout", "serve", str(example_repo), "--http-port", str(free_port()),
               "--grpc-port", str(free_port()), "--no-admin", "--no-inference-auth",
               "--cache-redis", "http://cache"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "--cache-redis: Redis URL must specify one of the following schemes" in result.stderr
