"""The audit log: JSON lines, appended only, private to the server's user."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from turnout.security.audit import AuditEvent, AuditLog, tail


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
