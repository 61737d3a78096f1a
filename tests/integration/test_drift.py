"""Drift detection on a real server: rows drawn from the training data keep
every feature's PSI under the threshold; one feature scaled by 2 raises its
PSI, and no other's. And `turnout profile` makes the profile from a CSV."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.datasets import load_diabetes

from tests.onnx_models import slower, write_model
from tests.support import ServerProcess, free_port, wait_until

DATA = load_diabetes()
ROWS = DATA.data.astype(np.float32)


def gauges(url: str) -> dict[tuple[str, str], float]:
    found = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("turnout_feature_drift{") and 'model="diabetes"' in line:
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
            found[(labels["feature"].strip('"'), labels["statistic"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return found


def settled(url: str, ready: Any, timeout: float = 10.0) -> dict[tuple[str, str], float]:
    """The drift gauges once ``ready`` says they show the window just sent."""

    def shown() -> dict[tuple[str, str], float] | None:
        found = gauges(url)
        return found if ready(found) else None

    settled_gauges: dict[tuple[str, str], float] = wait_until(shown, "the drift gauges to update", timeout)
    return settled_gauges


def send(client: httpx.Client, rows: np.ndarray) -> None:
    for start in range(0, len(rows), 50):
        chunk = rows[start : start + 50]
        body = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": list(chunk.shape), "data": chunk.ravel().tolist()}
            ]
        }
        assert client.post("/v2/models/diabetes/infer", json=body).status_code == 200


def test_drift_is_seen_in_the_feature_that_moved(repo: Path, log_dir: Path) -> None:
    rng = np.random.default_rng(0)
    steady = ROWS[rng.integers(0, len(ROWS), 1000)]
    shifted = ROWS[rng.integers(0, len(ROWS), 1000)].copy()
    shifted[:, 2] *= 2  # bmi
    with ServerProcess(repo, log_dir=log_dir) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert gauges(server.url) == {}  # no window completed yet
        send(client, steady)
        calm = settled(server.url, lambda found: len(found) == 2 * len(DATA.feature_names))
        send(client, shifted)
        moved = settled(server.url, lambda found: found != calm)  # the window is binned off the loop
        with server.admin_client() as admin:
            status = admin.get("/v2/repository/models/diabetes/drift").json()
        log = server.log()
    assert len(calm) == 2 * len(DATA.feature_names)  # psi and ks for each feature
    assert max(v for (_, statistic), v in calm.items() if statistic == "psi") < 0.2
    assert moved[("bmi", "psi")] > 0.2 and moved[("bmi", "ks")] > 0.1
    assert max(v for (feature, statistic), v in moved.items() if statistic == "psi" and feature != "bmi") < 0.2
    assert "drift in bmi" in log
    (latest,) = status["versions"]  # the admin API: the last window of each version
    assert latest["version"] == "1" and latest["rows"] == 1000
    assert latest["features"]["bmi"]["psi"] == moved[("bmi", "psi")]


def test_turnout_profile_writes_the_reference_from_a_csv(repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    header = ",".join(DATA.feature_names)
    np.savetxt(data, ROWS, delimiter=",", header=header, comments="")
    (repo / "diabetes" / "1" / "profile.json").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "turnout", "profile", "diabetes", "--repo", str(repo), "--data", str(data)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    profile = json.loads((repo / "diabetes" / "1" / "profile.json").read_text())
    assert profile["features"] == list(DATA.feature_names) and profile["rows"] == len(ROWS)
    assert profile["output"] == "prediction" and len(profile["inputs"]) == 10
    assert abs(sum(profile["inputs"][0]["shares"]) - 1.0) < 1e-9


class Receiver:
    """A small HTTP server standing in for Alertmanager's webhook receiver: it keeps what it gets."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_drift_fires_the_webhook_once_then_resolves(repo: Path, log_dir: Path) -> None:
    rng = np.random.default_rng(1)
    steady = ROWS[rng.integers(0, len(ROWS), 1000)]
    shifted = steady.copy()
    shifted[:, 2] *= 2
    with Receiver() as receiver:
        hook = f"http://127.0.0.1:{receiver.port}/alerts"
        server = ServerProcess(repo, "--alert-webhook", hook, log_dir=log_dir)
        with server, httpx.Client(base_url=server.url, timeout=30) as client:
            send(client, steady)
            send(client, shifted)
            send(client, shifted)  # still drifting: no second alert
            send(client, steady)  # back to normal: resolved
            deadline = time.monotonic() + 10
            while len(receiver.posts) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # nothing more arrives
    assert [p["status"] for p in receiver.posts] == ["firing", "resolved"]
    firing = receiver.posts[0]
    assert firing["version"] == "4" and firing["receiver"] == "turnout"
    (alert,) = firing["alerts"]
    assert alert["labels"] == {
        "alertname": "TurnoutFeatureDrift",
        "model": "diabetes",
        "version": "1",
        "feature": "bmi",
    }
    assert "feature bmi drifted" in alert["annotations"]["summary"] and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert receiver.posts[1]["alerts"][0]["fingerprint"] == alert["fingerprint"]


def test_a_missed_latency_slo_is_alerted(repo: Path, log_dir: Path) -> None:
    # diabetes made slow (same answers, milliseconds of compute), with an SLO it cannot meet
    write_model(repo / "diabetes" / "1" / "model.onnx",
                slower(repo / "diabetes" / "1" / "model.onnx", "input", "prediction", products=600))  # fmt: skip
    toml = repo / "diabetes" / "model.toml"
    toml.write_text(toml.read_text() + "\n[slo]\nwindow_requests = 50\np99_ms = 0.5\nmax_error_rate = 0.5\n")
    with Receiver() as receiver:
        server = ServerProcess(repo, "--alert-webhook", f"http://127.0.0.1:{receiver.port}/", log_dir=log_dir)
        with server, httpx.Client(base_url=server.url, timeout=30) as client:
            send(client, ROWS[:50].repeat(50, axis=0)[:2500])  # 50 requests of 50 rows
            deadline = time.monotonic() + 10
            while not any(p["groupLabels"]["alertname"] == "TurnoutLatencyOverSLO" for p in receiver.posts):
                assert time.monotonic() < deadline, receiver.posts
                time.sleep(0.05)
            time.sleep(0.3)
    slo_names = ("TurnoutLatencyOverSLO", "TurnoutHighErrorRate")
    alerts = [a for post in receiver.posts for a in post["alerts"] if a["labels"]["alertname"] in slo_names]
    assert [a["labels"] for a in alerts] == [{"alertname": "TurnoutLatencyOverSLO", "model": "diabetes"}]
    assert "over the 0.5 ms SLO" in alerts[0]["annotations"]["summary"]  # errors within theirs: no alert
