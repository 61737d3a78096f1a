"""Why a model is not served, as the repository index (and a refused request)
says it: with paths inside the repository, never where the repository lies
on the server's disk (issue 15)."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx

from tests.support import ServerProcess
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc


def test_reasons_name_files_relative_to_the_repository(server: ServerProcess, test_repo: Path) -> None:
    roots = {str(test_repo), str(test_repo.resolve())}
    with httpx.Client(base_url=server.url, timeout=30) as client, grpc.insecure_channel(server.grpc_address) as channel:
        index = client.post("/v2/repository/index").json()
        reasons = {e["name"]: e["reason"] for e in index if e["reason"]}
        assert reasons["broken_file"].startswith("broken_file/1/model.onnx: ")
        assert reasons["bad_config"].startswith("bad_config/model.toml: max_batch_sise")
        refused = client.post("/v2/models/broken_file/infer", json={"inputs": []})
        assert refused.status_code == 503 and "broken_file/1/model.onnx" in refused.text
        grpc_index = pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(pb.RepositoryIndexRequest(), timeout=30)
    shown = [*reasons.values(), refused.text, *(m.reason for m in grpc_index.models)]
    assert not [text for text in shown for root in roots if root in text]
    assert any(root in server.log() for root in roots)  # the operator's log keeps the absolute paths
