"""Requests on a real Redis stream answered by a real server: results equal ONNX
Runtime's, the binary form works, bad requests get V2 errors, poison entries
end in the dead-letter stream, and the stream path shows in the metrics."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import redis
from sklearn.datasets import load_breast_cancer

from tests.onnx_models import failing_when_above, write_model
from tests.streams.streams_support import (
    REQUESTS,
    envelope,
    outputs,
    produce,
    read_results,
    rows_request,
    wait_acknowledged,
)
from tests.support import RedisServer, ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

ROWS = load_breast_cancer().data.astype(np.float32)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def stream_repo(repo: Path) -> Path:
    """The examples, plus a copy of breast_cancer v1 that fails inside ONNX
    Runtime on rows whose first feature is above 20: a poison input."""
    poison = repo / "poison"
    model = failing_when_above(repo / "breast_cancer" / "1" / "model.onnx", "input", "probabilities", 20.0)
    write_model(poison / "1" / "model.onnx", model)
    # one request per batch, so a poison row fails only its own request
    (poison / "model.toml").write_text("max_batch_size = 1\n")
    shutil.rmtree(repo / "wine")  # fewer models to load: faster start
    return repo


def reference(rows: np.ndarray[Any, Any], model: Path) -> dict[str, np.ndarray[Any, Any]]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": rows}), strict=True))


def test_round_trip_json_binary_and_errors(stream_repo: Path, redis_server: RedisServer, log_dir: Path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    stream = REQUESTS.format("breast_cancer")
    # written before the server starts: the group reads from the stream's start
    ids = produce(client, stream, [envelope(rows_request(ROWS[i : i + 3], f"req-{i}"), "answers") for i in range(50)])
    with ServerProcess(stream_repo, "--stream", redis_server.url, log_dir=log_dir) as server:
        results = read_results(client, "answers", 50)
        expected = reference(ROWS, stream_repo / "breast_cancer" / "2" / "model.onnx")
        for i in range(50):
            result = results[f"req-{i}"]
            assert result[b"entry"].decode() == ids[i]
            assert result[b"model"] == b"breast_cancer" and result[b"model_version"] == b"2"
            got = outputs(result)
            np.testing.assert_array_equal(got["label"], expected["label"][i : i + 3])
            np.testing.assert_allclose(got["probabilities"], expected["probabilities"][i : i + 3], rtol=1e-6)

        # the binary form: the tensor's bytes after the JSON header, the answer in binary too
        header = orjson.dumps(
            {
                "id": "binary-1",
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [2, 30], "parameters": {"binary_data_size": 240}}
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        body = header + ROWS[:2].tobytes()
        client.xadd(stream, {"v": "1", "reply_to": "answers", "request": body, "header_length": str(len(header))})
        # no id in the request: the entry id stands in; a pinned version is honoured
        anonymous = client.xadd(
            stream, envelope(rows_request(ROWS[:1]), "answers", model_version="1")
        ).decode()  # fmt: skip
        # bad requests: answered with V2 errors, naming what is wrong
        bad_shape = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
            "id": "bad-1",
        }
        client.xadd(stream, envelope(bad_shape, "answers"))
        client.xadd(stream, {"v": "1", "reply_to": "answers", "request": b"{not json"})
        more = read_results(client, "answers", 54, key=b"entry")
        by_id = {fields[b"id"].decode(): fields for fields in more.values()}

        binary = by_id["binary-1"]
        length = int(binary[b"header_length"])
        document = orjson.loads(binary[b"response"][:length])
        probabilities = next(o for o in document["outputs"] if o["name"] == "probabilities")
        offset = sum(
            o["parameters"]["binary_data_size"] for o in document["outputs"][: document["outputs"].index(probabilities)]
        )
        raw = binary[b"response"][length + offset : length + offset + 16]
        np.testing.assert_allclose(struct.unpack("<4f", raw), expected["probabilities"][:2].ravel(), rtol=1e-6)

        assert by_id[anonymous][b"model_version"] == b"1"
        assert orjson.loads(by_id[anonymous][b"response"])["id"] == anonymous

        assert by_id["bad-1"][b"kind"] == b"error" and by_id["bad-1"][b"code"] == b"invalid"
        assert "shape [1, 3], the model expects [-1, 30]" in orjson.loads(by_id["bad-1"][b"error"])["error"]
        unparsable = [f for f in more.values() if f[b"kind"] == b"error" and b"malformed JSON" in f[b"error"]]
        assert len(unparsable) == 1

        # everything acknowledged; the metrics count the stream path
        wait_acknowledged(client, stream)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'turnout_stream_entries_total{model="breast_cancer",outcome="answered"} 52.0' in metrics
        assert 'turnout_stream_entries_total{model="breast_cancer",outcome="error"} 2.0' in metrics
        assert 'protocol="stream"' in metrics
        assert "turnout_stream_redis_up 1.0" in metrics
        # HTTP is served alongside
        assert httpx.post(f"{server.url}/v2/models/breast_cancer/infer", json=rows_request(ROWS[:1])).status_code == 200


def test_poison_entries_go_to_the_dead_letter_stream(
    stream_repo: Path, redis_server: RedisServer, log_dir: Path
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    stream = REQUESTS.format("poison")
    healthy = ROWS[ROWS[:, 0] <= 20.0][:20]
    poisonous = ROWS[ROWS[:, 0] > 20.0][:5]
    envelopes = [envelope(rows_request(row[None], f"ok-{i}"), "poison-answers") for i, row in enumerate(healthy)]
    envelopes += [envelope(rows_request(row[None], f"poison-{i}"), "poison-answers") for i, row in enumerate(poisonous)]
    envelopes.append({"v": "1", "request": b"{}"})  # nowhere to answer: dead-lettered at once
    envelopes.append({"v": "9", "reply_to": "poison-answers", "request": b"{}"})  # an envelope version from the future
    produce(client, stream, envelopes)
    args = ("--stream", redis_server.url, "--stream-max-deliveries", "2", "--stream-claim-idle", "0.3")
    with ServerProcess(stream_repo, *args, log_dir=log_dir) as server:
        results = read_results(client, "poison-answers", 26, timeout=60)
        for i in range(len(healthy)):
            assert results[f"ok-{i}"][b"kind"] == b"response"
        future = [f for f in results.values() if b"envelope version must be '1'" in f.get(b"error", b"")]
        assert len(future) == 1 and future[0][b"code"] == b"dead_letter"
        for i in range(len(poisonous)):
            assert results[f"poison-{i}"][b"kind"] == b"error"
            assert results[f"poison-{i}"][b"code"] == b"dead_letter"
        dead = client.xrange(f"{stream}:dead")
        reasons = {fields.get(b"reply_to", b"").decode() + "|" + fields[b"dead_reason"].decode() for _, fields in dead}
        assert len(dead) == 7, reasons
        failed = [f for _, f in dead if f[b"dead_reason"].startswith(b"failed 2 deliveries: internal")]
        assert len(failed) == 5 and all(f[b"dead_deliveries"] == b"2" for f in failed)
        assert all(orjson.loads(f[b"request"])["id"].startswith("poison-") for f in failed)
        assert any(b"no 'reply_to' stream" in f[b"dead_reason"] for _, f in dead)
        assert any(b"envelope version must be '1', found '9'" in f[b"dead_reason"] for _, f in dead)
        wait_acknowledged(client, stream)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'turnout_stream_entries_total{model="poison",outcome="dead_letter"} 7.0' in metrics
        assert "goes to the dead-letter stream" in server.log()


def test_dead_letters_are_listed_and_replayed_once_the_model_is_fixed(
    stream_repo: Path, redis_server: RedisServer, log_dir: Path
) -> None:
    """Poison rows fail the model and are dead-lettered; a fixed model dropped
    into the repository, then `turnout stream replay`, answers them."""
    client = redis.Redis.from_url(redis_server.url)
    stream = REQUESTS.format("poison")
    poisonous = ROWS[ROWS[:, 0] > 20.0][:3]
    produce(client, stream, [envelope(rows_request(r[None], f"p{i}"), "fixed") for i, r in enumerate(poisonous)])
    args = ("--stream", redis_server.url, "--stream-max-deliveries", "1", "--stream-claim-idle", "0.3",
            "--poll-interval", "0.2")  # fmt: skip
    turnout = [sys.executable, "-m", "turnout", "stream"]
    common = ["poison", "--redis", redis_server.url, "--repo", str(stream_repo)]
    with ServerProcess(stream_repo, *args, log_dir=log_dir) as server:
        first = read_results(client, "fixed", 3, timeout=60)
        assert {f[b"code"] for f in first.values()} == {b"dead_letter"}
        listed = subprocess.run([*turnout, "dead-letters", *common, "--json"], capture_output=True, text=True,
                                check=True, timeout=60)  # fmt: skip
        records = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert len(records) == 3 and all("failed 1 deliveries: internal" in r["reason"] for r in records)

        # the fix: a version 2 that is the healthy model; the watcher loads it
        shutil.copytree(stream_repo / "breast_cancer" / "1", stream_repo / "poison" / "2")
        deadline = time.monotonic() + 30
        while "model poison version 2 ready" not in server.log():
            assert time.monotonic() < deadline, "version 2 was not loaded"
            time.sleep(0.05)  # the watcher's scan: nothing to wait on but its log
        replayed = subprocess.run([*turnout, "replay", *common], capture_output=True, text=True, check=True,
                                  timeout=60)  # fmt: skip
        assert replayed.stdout.strip() == f"put 3 dead letter(s) back on {stream}"
        assert client.xlen(f"{stream}:dead") == 0
        answers = read_results(client, "fixed", 6, timeout=60, key=b"entry")
        fixed = [f for f in answers.values() if f[b"kind"] == b"response"]
        assert sorted(f[b"id"] for f in fixed) == [b"p0", b"p1", b"p2"]
        assert {f[b"model_version"] for f in fixed} == {b"2"}


def test_replay_moves_each_dead_letter_once_and_never_loses_one(redis_server: RedisServer, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_server.url)
    dead = "turnout:wine:requests:dead"
    letter = {"v": "1", "reply_to": "r", "request": b"{}", "dead_reason": "failed 3 deliveries: internal: boom",
              "dead_deliveries": "3", "dead_entry": "1-0", "dead_stream": "turnout:wine:requests"}  # fmt: skip
    first = client.xadd(dead, letter).decode()
    client.xadd(dead, {"v": "1", "dead_reason": "unreadable envelope: no 'reply_to' stream", "dead_entry": "2-0"})
    turnout = [sys.executable, "-m", "turnout", "stream", "replay", "wine", "--redis", redis_server.url]

    client.set("turnout:wine:requests", "not a stream")  # the XADD fails: the dead letter must stay
    failed = subprocess.run(turnout, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and "WRONGTYPE" in failed.stderr
    assert client.xlen(dead) == 2

    client.delete("turnout:wine:requests")
    twice = subprocess.run([*turnout, "--id", first, "--id", first], capture_output=True, text=True, timeout=60)
    assert twice.returncode == 0, twice.stderr
    assert twice.stdout.strip() == "put 1 dead letter(s) back on turnout:wine:requests"
    [(_, replayed)] = client.xrange("turnout:wine:requests")
    assert replayed == {b"v": b"1", b"reply_to": b"r", b"request": b"{}"}
    rest = subprocess.run(turnout, capture_output=True, text=True, timeout=60, check=True)
    assert rest.stdout.strip().endswith("left 1 unreadable envelope(s) in turnout:wine:requests:dead")
    assert client.xlen(dead) == 1 and client.xlen("turnout:wine:requests") == 1
