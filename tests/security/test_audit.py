"""The audit log: JSON lines, appended only, private to the server's user,
bounded against a client without a credential."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import grpc
import httpx
import pytest

from tests.support import ServerProcess
from turnout.security.audit import AuditEvent, AuditLog, follow, tail
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc


def test_events_are_appended_as_json_lines_with_a_time(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path, clock=lambda: 1_700_000_000.5)
    log.record(AuditEvent("ops", "unload", "fraud", "ok", "127.0.0.1:5000"))
    log.record(AuditEvent("", "authenticate:admin", "fraud", "denied", "10.0.0.9:4444", "the API key is not valid"))
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {
        "principal": "ops", "action": "unload", "target": "fraud", "result": "ok",
        "source": "127.0.0.1:5000", "detail": "", "time": "2023-11-14T22:13:20.500+00:00",
    }  # fmt: skip
    assert lines[1]["result"] == "denied"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_reopened_log_keeps_what_was_there(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for n in range(3):
        log = AuditLog(path)
        log.record(AuditEvent(f"p{n}", "load", "m", "ok", "here"))
        log.close()
    assert [json.loads(line)["principal"] for line in path.read_text().splitlines()] == ["p0", "p1", "p2"]
    assert tail(path, 2) == path.read_text().splitlines()[-2:]


def test_lines_stay_whole_whatever_the_text(tmp_path: Path) -> None:
    """A newline or a quote in a target cannot forge a second event."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.record(AuditEvent("ops", "load", 'evil"\n{"principal":"root"}', "denied", "x"))
    log.close()
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["target"] == 'evil"\n{"principal":"root"}'


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def failure(target: str = "m", source: str = "10.0.0.9:4444") -> AuditEvent:
    return AuditEvent("", "authenticate:infer", target, "denied", source, "the API key is not valid")


def test_every_field_and_the_whole_line_are_bounded(tmp_path: Path) -> None:
    """A 1 MB model name (or any client text) cannot make a 1 MB line: each
    field is cut, with its length noted, and the line stays <= 2 KiB even when
    every character needs a 12-byte escape."""
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.record(failure(target="x" * 1_000_000))
    astral = "\U0001f600" * 300_000  # "\ud83d\ude00" in JSON: 12 bytes a character
    log.record(AuditEvent(astral, "load", astral, "denied", astral, astral))
    log.close()
    first, second = path.read_bytes().splitlines()
    assert len(first) < 600 and json.loads(first)["target"] == "x" * 256 + "...[1000000 chars]"
    assert len(second) <= 2048
    record = json.loads(second)
    assert record["action"] == "load" and record["target"].endswith("...[300000 chars]")
    assert record["time"].endswith("+00:00")  # never cut


def test_auth_failures_are_throttled_and_the_dropped_ones_counted(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    clock = FakeClock()
    log = AuditLog(path, clock, failures_per_second=2.0, failure_burst=5, monotonic=clock)
    for _ in range(1000):
        log.record(failure())
    log.record(AuditEvent("ops", "unload", "fraud", "ok", "127.0.0.1:5000"))  # admin: always recorded
    for _ in range(100):
        log.record(AuditEvent("", "admin", "fraud", "denied", "x", "rate limited"))  # refused admin actions too
    clock.now += 1.0  # two more failures may be recorded
    for _ in range(10):
        log.record(failure())
    log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    actions = [r["action"] for r in records]
    assert actions[:5] == ["authenticate:infer"] * 5
    summary = records[5]
    assert summary["result"] == "not recorded"
    assert summary["detail"].startswith("995 authentication failures not recorded since 2023-11-14T22:13:20")
    assert actions[6:107] == ["unload"] + ["admin"] * 100
    assert actions[107:] == ["authenticate:infer", "authenticate:infer", "authenticate"]  # 8 more dropped, at close
    assert records[-1]["detail"].startswith("8 authentication failures not recorded")
    assert len(records) == 110


def test_the_file_rotates_by_size_and_keeps_every_recorded_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=4096, keep=3)
    for n in range(200):  # ~200 B a line: ~20 lines a file, more than 4 files in all
        log.record(AuditEvent(f"p{n}", "load", "m", "ok", "here"))
    log.close()
    files = [path, *(tmp_path / f"audit.log.{k}" for k in (1, 2, 3))]
    assert not (tmp_path / "audit.log.4").exists()
    assert all(f.stat().st_size <= 4096 and stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    kept = [json.loads(line)["principal"] for f in reversed(files) for line in f.read_text().splitlines()]
    assert kept == [f"p{n}" for n in range(200 - len(kept), 200)]  # the newest, in order, none lost
    every = [line for f in reversed(files) for line in f.read_text().splitlines()]
    assert tail(path, 50) == every[-50:]  # reaching back into the rotated files


def test_follow_reads_on_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=1024, keep=2)
    log.record(AuditEvent("before", "load", "m", "ok", "here"))
    lines = follow(path, poll_seconds=0.01)
    for n in range(12):  # through at least one rotation
        log.record(AuditEvent(f"p{n}", "load", "m", "ok", "here"))
    assert (tmp_path / "audit.log.1").exists()
    seen = [json.loads(next(lines))["principal"] for _ in range(12)]
    log.close()
    assert seen == [f"p{n}" for n in range(12)]


def test_a_flood_of_failures_with_huge_names_cannot_flood_the_log(example_repo: Path, log_dir: Path) -> None:
    """Issue 15: each authentication failure was a line, with the model name
    copied whole (30 KB names: 52 MB/s of log). A real server, a client
    without a credential: 100 REST calls to a 4,000-character model name, 300
    gRPC calls named with 100 KB. The log holds at most the burst plus the
    refill, every field cut, every line <= 2 KiB, the rest counted in
    summaries; an admin action right after is recorded."""
    audit = log_dir / "audit.log"
    server = ServerProcess(example_repo, "--audit-log", str(audit), log_dir=log_dir, inference_auth=True)
    wrong = "Bearer tnt_0123456789ab_wrong"
    with server, httpx.Client(base_url=server.url, timeout=10) as client:
        began = time.monotonic()
        for _ in range(100):
            answer = client.post(f"/v2/models/{'m' * 4000}/infer", json={}, headers={"authorization": wrong})
            assert answer.status_code == 401
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            message = pb.ModelInferRequest(model_name="m" * 100_000)
            for _ in range(300):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.ModelInfer(message, metadata=(("authorization", wrong),), timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        elapsed = time.monotonic() - began
        with server.admin_client() as admin:
            assert admin.post("/v2/repository/models/diabetes/load").status_code == 200
    lines = audit.read_bytes().splitlines()
    assert max(map(len, lines)) <= 2048 and audit.stat().st_size < (100 + 20 * elapsed) * 2048
    records = [json.loads(line) for line in lines]
    assert all(len(value) <= 256 + len("...[100000 chars]") for r in records for value in r.values())
    failures = [r for r in records if r["action"] == "authenticate:infer"]
    assert failures[0]["target"] == "m" * 256 + "...[4000 chars]"  # the model named in the URL
    assert len(failures) <= 100 + 10 * elapsed + 1  # the default burst and rate
    summaries = [r for r in records if r["result"] == "not recorded"]
    assert summaries and sum(int(r["detail"].split()[0]) for r in summaries) == 400 - len(failures)
    assert [r["action"] for r in records if r["principal"] == "test-admin"] == ["load"]
