"""The delivery contract under failure, against real Redis servers and real
turnout processes: a consumer killed mid-flight loses nothing, a saturated
model stops the reading, and a Redis restart only pauses consumption."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from sklearn.datasets import load_breast_cancer

from tests.onnx_models import slow, write_model
from tests.streams.streams_support import REQUESTS, envelope, produce, read_results, rows_request, wait_acknowledged
from tests.support import RedisServer, ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

ROWS = load_breast_cancer().data.astype(np.float32)
STREAM = REQUESTS.format("breast_cancer")


@pytest.fixture
def cancer_repo(repo: Path) -> Path:
    for other in ("wine", "diabetes"):
        shutil.rmtree(repo / other)
    return repo


def test_a_consumer_killed_mid_flight_loses_nothing(cancer_repo: Path, tmp_path: Path, log_dir: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        total = 10_000
        produce(
            client,
            STREAM,
            (envelope(rows_request(ROWS[i % len(ROWS)][None], f"m{i}"), "results") for i in range(total)),
        )
        common = ("--stream", redis_server.url, "--stream-claim-idle", "1")
        first = ServerProcess(cancer_repo, *common, "--stream-consumer", "first", log_dir=log_dir).start()
        try:
            read_results(client, "results", 1000, timeout=60)
        finally:
            assert first.process is not None
            first.process.kill()  # SIGKILL: no chance to finish or acknowledge anything
            first.process.wait()
        left_pending = client.xpending_range(STREAM, "turnout", "-", "+", 10_000, consumername="first")
        assert left_pending, "the kill should land while the first consumer holds entries"
        answered_before = client.xlen("results")
        assert answered_before < total, "the kill should land before the work is done"

        with ServerProcess(cancer_repo, *common, "--stream-consumer", "second", log_dir=log_dir) as second:
            results = read_results(client, "results", total, timeout=120)
            assert set(results) == {f"m{i}" for i in range(total)}
            assert all(fields[b"kind"] == b"response" for fields in results.values())
            # the second took over what the first held when it died
            metrics = httpx.get(f"{second.url}/metrics").text
            prefix = 'turnout_stream_entries_total{model="breast_cancer",outcome="answered"} '
            answered = float(next(line for line in metrics.splitlines() if line.startswith(prefix)).split()[-1])
            assert answered >= total - answered_before
            wait_acknowledged(client, STREAM)
        assert client.xlen(f"{STREAM}:dead") == 0


def test_a_saturated_model_stops_the_reading(repo: Path, tmp_path: Path, log_dir: Path) -> None:
    """A slow model and a backlog of 300 entries of 256 KiB (75 MiB): the consumer
    never holds more than its prefetch, and its memory does not grow with the backlog."""
    for other in ("wine", "diabetes", "breast_cancer"):
        shutil.rmtree(repo / other)
    write_model(repo / "slow" / "1" / "model.onnx", slow(repeats=80))
    (repo / "slow" / "model.toml").write_text("max_batch_size = 4\n[stream]\nprefetch = 8\n")
    tensor = np.random.default_rng(0).standard_normal((1, 256, 256)).astype(np.float32)
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        stream = REQUESTS.format("slow")
        with ServerProcess(repo, "--stream", redis_server.url, log_dir=log_dir) as server:
            assert server.process is not None
            baseline = _rss_mib(server.process.pid)
            header = (
                b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,256,256],'
                b'"parameters":{"binary_data_size":262144}}]}'
            )
            item = {"v": "1", "reply_to": "slow-results", "request": header + tensor.tobytes(),
                    "header_length": str(len(header))}  # fmt: skip
            produce(client, stream, (item for _ in range(300)), chunk=50)
            held, lags = [], []
            for _ in range(20):
                time.sleep(0.05)
                held.append(client.xpending(stream, "turnout")["pending"])
                lags.append(client.xlen(stream) - client.xlen("slow-results") - held[-1])
            grown = _rss_mib(server.process.pid) - baseline
            assert max(held) <= 8, held
            assert max(held) > 0 and min(lags) > 100, (held, lags)
            assert grown < 40, f"the server grew by {grown:.0f} MiB while 75 MiB waited in Redis"
            metrics = httpx.get(f"{server.url}/metrics").text
            lag_line = next(line for line in metrics.splitlines() if line.startswith('turnout_stream_lag{model="slow"'))
            assert float(lag_line.split()[-1]) > 0


def test_a_redis_restart_pauses_consumption_and_loses_nothing(cancer_repo: Path, tmp_path: Path, log_dir: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis", persistent=True).start()
    total = 1500
    produced: list[str] = []

    def producer() -> None:
        client = redis.Redis(port=redis_server.port, socket_connect_timeout=0.5, socket_timeout=2)
        while len(produced) < total:
            request_id = f"r{len(produced)}"
            try:
                client.xadd(STREAM, envelope(rows_request(ROWS[len(produced) % len(ROWS)][None], request_id),
                                             "restart-results"))  # fmt: skip
            except redis.ConnectionError:
                time.sleep(0.05)  # Redis is down: the producer waits, as a real one would
                continue
            produced.append(request_id)
            time.sleep(0.002)

    try:
        with ServerProcess(cancer_repo, "--stream", redis_server.url, log_dir=log_dir) as server:
            thread = threading.Thread(target=producer)
            thread.start()
            try:
                while len(produced) < 100:
                    time.sleep(0.01)
                redis_server.stop()
                before_outage = len(produced)
                with httpx.Client(base_url=server.url) as http:  # HTTP is served while Redis is away
                    for i in range(20):
                        response = http.post("/v2/models/breast_cancer/infer", json=rows_request(ROWS[i][None]))
                        assert response.status_code == 200
                time.sleep(1.5)
                assert len(produced) == before_outage  # nothing could be written meanwhile
                redis_server.start()
            finally:
                thread.join()
            client = redis.Redis.from_url(redis_server.url)
            results = read_results(client, "restart-results", total, timeout=60)
            assert set(results) == set(produced) and len(produced) == total
            log = server.log()
            assert "is unreachable" in log and "is reachable again" in log
            metrics = httpx.get(f"{server.url}/metrics").text
            assert "turnout_stream_redis_up 1.0" in metrics
    finally:
        redis_server.__exit__()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
