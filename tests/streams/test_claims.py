"""Claims under light load (issue 16): a consumer with nothing new to read still
takes over what a dead consumer held, retries what failed here, dead-letters it
after ``max_deliveries``, and removes consumers long gone. Real redis-server,
real turnout processes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import redis
from sklearn.datasets import load_breast_cancer

from tests.onnx_models import failing_when_above, slow, write_model
from tests.streams.streams_support import REQUESTS, envelope, produce, read_results, rows_request, wait_acknowledged
from tests.support import RedisServer, ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

ROWS = load_breast_cancer().data.astype(np.float32)


@pytest.fixture
def slow_repo(repo: Path) -> Path:
    """Only a slow model (tens of ms a row): entries stay in hand long enough to be killed with."""
    for other in ("wine", "diabetes", "breast_cancer"):
        shutil.rmtree(repo / other)
    write_model(repo / "slow" / "1" / "model.onnx", slow(repeats=60))
    (repo / "slow" / "model.toml").write_text("max_batch_size = 2\n[stream]\nprefetch = 64\n")
    return repo


def taken_all(client: redis.Redis, stream: str) -> bool:
    groups = client.xinfo_groups(stream)
    return bool(groups) and groups[0]["lag"] == 0


def test_an_idle_consumer_takes_over_what_a_dead_one_held(slow_repo: Path, tmp_path: Path, log_dir: Path) -> None:
    """Every entry is delivered to the first consumer, which is killed holding
    most of them; the second has nothing new to read: only claims can answer them."""
    stream = REQUESTS.format("slow")
    total = 40
    tensor = np.zeros((1, 256, 256), dtype=np.float32).tobytes()
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        items = []
        for i in range(total):
            header = (b'{"id":"r%d","inputs":[{"name":"x","datatype":"FP32","shape":[1,256,256],'
                      b'"parameters":{"binary_data_size":262144}}]}' % i)  # fmt: skip
            items.append({"v": "1", "reply_to": "results", "request": header + tensor,
                          "header_length": str(len(header))})  # fmt: skip
        produce(client, stream, items)
        common = ("--stream", redis_server.url, "--stream-claim-idle", "2")
        first = ServerProcess(slow_repo, *common, "--stream-consumer", "first", log_dir=log_dir).start()
        try:
            deadline = time.monotonic() + 60
            # The group may not exist yet: readiness does not wait for the stream consumers.
            while not taken_all(client, stream) or client.xlen("results") == 0:
                assert time.monotonic() < deadline, "the first consumer never took every entry"
                time.sleep(0.02)
        finally:
            assert first.process is not None
            first.process.kill()  # SIGKILL: nothing acknowledged, nothing handed back
            first.process.wait()
        held = client.xpending(stream, "turnout")["pending"]
        assert held > 10, f"the kill should land while the first consumer holds entries ({held})"
        with ServerProcess(slow_repo, *common, "--stream-consumer", "second", log_dir=log_dir):
            results = read_results(client, "results", total, timeout=60)
            assert set(results) == {f"r{i}" for i in range(total)}
            assert all(fields[b"kind"] == b"response" for fields in results.values())
            wait_acknowledged(client, stream)
        assert client.xlen(f"{stream}:dead") == 0


def test_entries_failing_here_are_retried_then_dead_lettered_by_an_idle_consumer(
    repo: Path, tmp_path: Path, log_dir: Path
) -> None:
    poison = repo / "poison"
    failing = failing_when_above(repo / "breast_cancer" / "1" / "model.onnx", "input", "probabilities", 20.0)
    write_model(poison / "1" / "model.onnx", failing)
    (poison / "model.toml").write_text("max_batch_size = 1\n")
    for other in ("wine", "diabetes"):
        shutil.rmtree(repo / other)
    stream = REQUESTS.format("poison")
    rows = ROWS[ROWS[:, 0] > 20.0][:4]
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        produce(client, stream, [envelope(rows_request(row[None], f"p{i}"), "answers") for i, row in enumerate(rows)])
        args = ("--stream", redis_server.url, "--stream-max-deliveries", "2", "--stream-claim-idle", "1.5")
        with ServerProcess(repo, *args, log_dir=log_dir):
            results = read_results(client, "answers", len(rows), timeout=30)
            assert all(fields[b"code"] == b"dead_letter" for fields in results.values()), results
            dead = client.xrange(f"{stream}:dead")
            assert len(dead) == len(rows)
            assert all(f[b"dead_reason"].startswith(b"failed 2 deliveries: internal") for _, f in dead), dead
            wait_acknowledged(client, stream)


def test_a_consumer_gone_for_good_is_removed_from_the_group(repo: Path, tmp_path: Path, log_dir: Path) -> None:
    """A consumer that holds nothing and has been silent for ten claim periods
    (here 5 s) is removed from the group; the live one keeps answering."""
    for other in ("wine", "diabetes"):
        shutil.rmtree(repo / other)
    stream = REQUESTS.format("breast_cancer")
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        client.xgroup_create(stream, "turnout", id="0", mkstream=True)
        client.xgroup_createconsumer(stream, "turnout", "gone")
        args = ("--stream", redis_server.url, "--stream-consumer", "live", "--stream-claim-idle", "0.5")
        with ServerProcess(repo, *args, log_dir=log_dir) as server:
            labels = f'consumer="gone",model="breast_cancer",stream="{stream}"'
            gauge = "turnout_stream_consumer_pending{" + labels + "} 0.0"
            deadline = time.monotonic() + 10
            while gauge not in httpx.get(f"{server.url}/metrics").text:  # reported while it is in the group
                assert time.monotonic() < deadline
                time.sleep(0.2)
            deadline = time.monotonic() + 20
            while "gone" in {c["name"].decode() for c in client.xinfo_consumers(stream, "turnout")}:
                assert time.monotonic() < deadline, client.xinfo_consumers(stream, "turnout")
                time.sleep(0.2)
            assert "removed consumer 'gone'" in server.log()
            produce(client, stream, [envelope(rows_request(ROWS[:1], "after"), "answers")])
            assert read_results(client, "answers", 1, timeout=30)["after"][b"kind"] == b"response"
            assert "live" in {c["name"].decode() for c in client.xinfo_consumers(stream, "turnout")}
            time.sleep(1.5)  # a lag report later: the removed consumer's series is gone
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'consumer="gone"' not in metrics and 'consumer="live"' in metrics


def test_two_kills_and_light_load_after_leave_nothing_pending(stream_repo_light: Path, tmp_path: Path,
                                                              log_dir: Path) -> None:  # fmt: skip
    """Issue 16's scenario: 10,000 requests and 40 poisoned ones on a stream, the
    server SIGKILLed twice at random points and started again, then light load:
    every request ends answered or dead-lettered, and nothing stays pending."""
    rng = np.random.default_rng()
    stream = REQUESTS.format("poison")
    healthy = ROWS[ROWS[:, 0] <= 20.0]
    poisonous = ROWS[ROWS[:, 0] > 20.0]
    total, poisoned = 10_000, 40
    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        items = [envelope(rows_request(healthy[i % len(healthy)][None], f"ok-{i}"), "answers") for i in range(total)]
        for j in range(poisoned):  # spread through the stream
            at = int(rng.integers(0, len(items)))
            items.insert(at, envelope(rows_request(poisonous[j % len(poisonous)][None], f"bad-{j}"), "answers"))
        produce(client, stream, items)
        # the default of 3 deliveries: an entry held at both kills is still answered on its third
        args = ("--stream", redis_server.url, "--stream-claim-idle", "2")
        first_kill = int(rng.integers(1_500, 3_500))
        for kill_at in (first_kill, int(rng.integers(first_kill + 1_500, 7_000))):
            server = ServerProcess(stream_repo_light, *args, log_dir=log_dir).start()
            try:
                deadline = time.monotonic() + 120
                while client.xlen("answers") < kill_at:
                    assert time.monotonic() < deadline, client.xlen("answers")
                    time.sleep(0.01)
            finally:
                assert server.process is not None
                server.process.kill()
                server.process.wait()
        assert client.xpending(stream, "turnout")["pending"], "the kills should land while entries are held"
        with ServerProcess(stream_repo_light, *args, log_dir=log_dir):
            results = read_results(client, "answers", total + poisoned, timeout=120)
            assert all(results[f"ok-{i}"][b"kind"] == b"response" for i in range(total))
            assert all(results[f"bad-{j}"][b"code"] == b"dead_letter" for j in range(poisoned))
            produce(client, stream, [envelope(rows_request(healthy[:1], "light"), "answers")])  # light load after
            assert read_results(client, "answers", total + poisoned + 1, timeout=30)["light"][b"kind"] == b"response"
            wait_acknowledged(client, stream, timeout=30)
        dead = client.xrange(f"{stream}:dead")
        assert sorted(orjson.loads(f[b"request"])["id"] for _, f in dead) == sorted(f"bad-{j}" for j in range(poisoned))


@pytest.fixture
def stream_repo_light(repo: Path) -> Path:
    """breast_cancer v1 that fails inside ONNX Runtime on rows whose first feature
    is above 20 (a poison input), one request per batch, and nothing else."""
    poison = repo / "poison"
    failing = failing_when_above(repo / "breast_cancer" / "1" / "model.onnx", "input", "probabilities", 20.0)
    write_model(poison / "1" / "model.onnx", failing)
    (poison / "model.toml").write_text("max_batch_size = 1\n")
    for other in ("wine", "diabetes", "breast_cancer"):
        shutil.rmtree(repo / other)
    return repo
