"""The committed gRPC stubs are exactly what `make proto` generates from the
committed .proto: a stale stub fails here."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path("turnout/transports/grpc/v2")


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)], check=True)
    for name in ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py"):
        committed = ROOT / "src" / PACKAGE / name
        fresh = tmp_path / PACKAGE / name
        assert filecmp.cmp(committed, fresh, shallow=False), f"{committed} is stale: run `make proto`"


def test_proto_keeps_the_protocol_field_numbers() -> None:
    """Wire compatibility: the package, messages and field numbers of the
    Open Inference Protocol's own file (shared/spec) are all in ours."""
    from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as ours

    spec = ROOT.parent / "shared" / "spec" / "open_inference_grpc.proto"
    text = spec.read_text() if spec.exists() else (ROOT / "src" / PACKAGE / "grpc_predict_v2.proto").read_text()
    assert ours.DESCRIPTOR.package == "inference"
    checked = 0
    for message in ours.DESCRIPTOR.message_types_by_name.values():
        for field in message.fields:
            if f"{field.name} = {field.number};" in text:
                checked += 1
    assert checked >= 40
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"):
        assert method in service.methods_by_name
