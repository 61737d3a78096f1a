"""The consumer against Redis doing unusual things: entries held longer than
the claim time, a stream deleted under a blocked read, a group rewound, and
a request larger than the limit."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis
from sklearn.datasets import load_breast_cancer

from tests.onnx_models import slow, write_model
from tests.streams.streams_support import REQUESTS, envelope, produce, read_results, rows_request, wait_acknowledged
from tests.support import RedisServer, ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

ROWS = load_breast_cancer().data.astype(np.float32)


def test_entries_in_hand_stay_ours_and_prefetch_holds(repo: Path, tmp_path: Path, log_dir: Path) -> None:
    """A slow model holds entries far longer than a 0.3 s claim time: they are
    neither claimed again (by this consumer or another) nor counted as failed
    deliveries, and the reader and the claimer together keep to the prefetch."""
    for other in ("wine", "diabetes", "breast_cancer"):
        shutil.rmtree(repo / other)
    write_model(repo / "slow" / "1" / "model.onnx", slow(repeats=40))
    (repo / "slow" / "model.toml").write_text("max_batch_size = 2\n[stream]\nprefetch = 4\n")
    tensor = np.zeros((1, 256, 256), dtype=np.float32).ravel().tolist()
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256, 256], "data": tensor}]}
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        stream = REQUESTS.format("slow")
        args = ("--stream", redis_server.url, "--stream-claim-idle", "0.3", "--stream-max-deliveries", "2")
        # two consumers of the same group: either would take over the other's idle entries
        first = ServerProcess(repo, *args, log_dir=log_dir)
        with first, ServerProcess(repo, *args, "--stream-consumer", "other", log_dir=log_dir):
            produce(client, stream, (envelope({**request, "id": f"s{i}"}, "slow-results") for i in range(40)))
            held, delivered = [], []
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                pending = client.xpending_range(stream, "turnout", "-", "+", 100)
                for consumer in {p["consumer"] for p in pending}:
                    held.append(sum(1 for p in pending if p["consumer"] == consumer))
                delivered += [p["times_delivered"] for p in pending]
                time.sleep(0.02)
            results = read_results(client, "slow-results", 40, timeout=60)
        assert held and max(held) <= 4, held
        assert delivered and set(delivered) == {1}, sorted(set(delivered))
        assert all(fields[b"kind"] == b"response" for fields in results.values())
        assert client.xlen(f"{stream}:dead") == 0


def test_a_deleted_stream_and_a_rewound_group(repo: Path, tmp_path: Path, log_dir: Path) -> None:
    for other in ("wine", "diabetes"):
        shutil.rmtree(repo / other)
    (repo / "breast_cancer" / "model.toml").write_text(
        (repo / "breast_cancer" / "model.toml").read_text() + "\n[stream]\nprefetch = 4\n"
    )
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        stream = REQUESTS.format("breast_cancer")

        def answered(prefix: str, count: int, reply_to: str) -> None:
            produce(
                client, stream, (envelope(rows_request(ROWS[i][None], f"{prefix}{i}"), reply_to) for i in range(count))
            )
            assert set(read_results(client, reply_to, count, timeout=30)) == {f"{prefix}{i}" for i in range(count)}

        with ServerProcess(repo, "--stream", redis_server.url, log_dir=log_dir) as server:
            answered("a", 10, "first")
            client.delete(stream)  # under the blocked read: Redis unblocks it with an error
            time.sleep(0.2)
            answered("b", 10, "second")
            client.xgroup_setid(stream, "turnout", "0")  # every entry is delivered again
            assert len(read_results(client, "second", 10, timeout=30)) == 10
            answered("c", 30, "third")  # no slot was lost: with a prefetch of 4 a leak would stall this
            wait_acknowledged(client, stream)
            assert "failed; starting it again" not in server.log()


def test_a_request_over_the_size_limit_is_refused(repo: Path, tmp_path: Path, log_dir: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        stream = REQUESTS.format("breast_cancer")
        big = rows_request(ROWS[:20], "big")  # ~12 KB of JSON
        small = rows_request(ROWS[:1], "small")
        produce(client, stream, [envelope(big, "limited"), envelope(small, "limited")])
        with ServerProcess(repo, "--stream", redis_server.url, "--max-body-bytes", "4000", log_dir=log_dir):
            results = read_results(client, "limited", 2, timeout=30)
        assert results["big"][b"kind"] == b"error" and results["big"][b"code"] == b"too_large"
        assert "more than the limit of 4000" in orjson.loads(results["big"][b"error"])["error"]
        assert results["small"][b"kind"] == b"response"


def test_stream_names_come_from_model_toml_and_follow_its_changes(repo: Path, tmp_path: Path, log_dir: Path) -> None:
    shutil.rmtree(repo / "wine")
    cancer_toml = repo / "breast_cancer" / "model.toml"
    original = cancer_toml.read_text()
    cancer_toml.write_text(original + '\n[stream]\nname = "cancer-in"\ndead_letter = "cancer-dead"\n')
    (repo / "diabetes" / "model.toml").write_text(
        (repo / "diabetes" / "model.toml").read_text() + "\n[stream]\nenabled = false\n"
    )
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        with ServerProcess(repo, "--stream", redis_server.url, "--poll-interval", "0.2", log_dir=log_dir) as server:
            produce(client, "cancer-in", [envelope(rows_request(ROWS[:1], "one"), "named")])
            assert read_results(client, "named", 1, timeout=30)["one"][b"kind"] == b"response"
            client.xadd("cancer-in", {"v": "1"})
            deadline = time.monotonic() + 30
            while not client.exists("cancer-dead"):
                assert time.monotonic() < deadline, "the dead letter never came"
                time.sleep(0.05)
            assert not client.exists(REQUESTS.format("diabetes"))  # not consumed: no group, no stream made

            cancer_toml.write_text(original + '\n[stream]\nname = "cancer-in-2"\n')  # moved, while serving
            produce(client, "cancer-in-2", [envelope(rows_request(ROWS[:1], "two"), "moved")])
            assert read_results(client, "moved", 1, timeout=30)["two"][b"kind"] == b"response"
            assert "no longer consuming cancer-in for breast_cancer" in server.log()
