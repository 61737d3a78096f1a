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


def test_proto_keeps_the_protocols_messages_and_field_numbers() -> None:
    """Wire compatibility: every message, field, number and type of the Open
    Inference Protocol's own file (tests/spec, a copy of shared/spec) is in ours,
    and every RPC of its service."""
    from google.protobuf import descriptor_pool
    from grpc_tools import protoc

    from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as ours

    spec_dir = ROOT / "tests" / "spec"
    out = ROOT / ".pytest_cache" / "spec_descriptor.pb"
    out.parent.mkdir(exist_ok=True)
    assert protoc.main(["protoc", f"-I{spec_dir}", f"--descriptor_set_out={out}", "open_inference_grpc.proto"]) == 0
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    spec = pool.FindFileByName("open_inference_grpc.proto")
    assert spec.package == ours.DESCRIPTOR.package == "inference"

    def check(theirs: object, mine: object) -> int:
        count = 0
        for field in theirs.fields:  # type: ignore[attr-defined]
            counterpart = mine.fields_by_name.get(field.name)  # type: ignore[attr-defined]
            assert counterpart is not None, f"{theirs.full_name}.{field.name} is missing"  # type: ignore[attr-defined]
            assert (counterpart.number, counterpart.type) == (field.number, field.type), field.full_name
            count += 1
        for nested in theirs.nested_types:  # type: ignore[attr-defined]
            count += check(nested, mine.nested_types_by_name[nested.name])  # type: ignore[attr-defined]
        return count

    fields = sum(
        check(message, ours.DESCRIPTOR.message_types_by_name[name])
        for name, message in spec.message_types_by_name.items()
    )
    assert fields > 50
    service = spec.services_by_name["GRPCInferenceService"]
    our_service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        mine = our_service.methods_by_name[method.name]
        assert mine.input_type.full_name == method.input_type.full_name
        assert mine.output_type.full_name == method.output_type.full_name
