"""A model.toml edited while the server runs, the way a newcomer edits it
(issue 19): a broken edit keeps the model serving and the repository index
says why the edit did not apply, never a stale reason or none; a new
max_batch_size takes effect without declaring the whole signature."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.support import ServerProcess, wait_until


def infer(server: ServerProcess, rows: int) -> httpx.Response:
    data = np.full((rows, 10), 0.01, dtype=np.float32)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(data.shape), "data": data.ravel().tolist()}]}
    return httpx.post(f"{server.url}/v2/models/diabetes/infer", json=body, timeout=30)


def diabetes_index(server: ServerProcess) -> list[dict[str, Any]]:
    entries = httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()
    return [entry for entry in entries if entry["name"] == "diabetes"]


def test_a_broken_model_toml_keeps_serving_and_the_index_says_why(repo: Path, log_dir: Path) -> None:
    toml = repo / "diabetes" / "model.toml"
    good = toml.read_text()
    server = ServerProcess(repo, "--model-control", "poll", "--poll-interval", "0.2", log_dir=log_dir)
    with server:
        # an earlier, different failure first: a broken version 2 (the policy serves the highest)
        (repo / "diabetes" / ".staging").mkdir()
        (repo / "diabetes" / ".staging" / "model.onnx").write_bytes(b"not an onnx model")
        (repo / "diabetes" / ".staging").rename(repo / "diabetes" / "2")
        wait_until(lambda: any(e["state"] == "UNAVAILABLE" for e in diabetes_index(server)), "version 2 refused")
        shutil.rmtree(repo / "diabetes" / "2")
        toml.write_text("max_batch_sise = 8\n" + good)  # a typo
        entries = wait_until(
            lambda: [e for e in diabetes_index(server) if "max_batch_sise" in e["reason"]], "the typo in the index"
        )
        assert [(e["version"], e["state"]) for e in entries] == [("1", "READY")]
        assert "still serving as loaded before this model.toml" in entries[0]["reason"]
        assert "onnx" not in entries[0]["reason"]  # not the earlier failure's reason
        assert infer(server, 2).status_code == 200
        toml.write_text(good)
        wait_until(lambda: [e["reason"] for e in diabetes_index(server)] == [""], "the reason cleared once fixed")


def test_max_batch_size_changes_on_a_running_server_without_declaring_the_signature(repo: Path, log_dir: Path) -> None:
    toml = repo / "diabetes" / "model.toml"
    server = ServerProcess(repo, "--model-control", "poll", "--poll-interval", "0.2", log_dir=log_dir)
    with server:
        assert infer(server, 20).status_code == 200  # the default: 64 rows a request
        toml.write_text("max_batch_size = 8\n" + toml.read_text())  # above the tables
        wait_until(lambda: infer(server, 20).status_code == 400, "max_batch_size 8 applied")
        assert infer(server, 8).status_code == 200
        assert [(e["state"], e["reason"]) for e in diabetes_index(server)] == [("READY", "")]
