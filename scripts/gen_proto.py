"""Generate the V2 gRPC stubs from src/turnout/transports/grpc/v2/grpc_predict_v2.proto.

Usage: python scripts/gen_proto.py [OUT_ROOT]   (default: src, i.e. in place)

The generated module registers its messages in a private descriptor pool, not
protobuf's process-wide default one: Triton's client (tritonclient.grpc)
registers the same message names (package ``inference``) from its own file, and
two files defining one name in one pool cannot be imported together. With a
private pool, turnout and tritonclient live in one process (tests, gateways).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "turnout/transports/grpc/v2/grpc_predict_v2.proto"


def generate(out_root: Path) -> None:
    src = ROOT / "src"
    if out_root.resolve() != src.resolve():
        (out_root / PROTO).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / PROTO, out_root / PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(src / PROTO),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    module = out_root / PROTO.replace(".proto", "_pb2.py")
    text = module.read_text()
    default_pool = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
    if default_pool not in text:
        raise SystemExit(f"{module}: protoc's output changed shape; update {__file__}")
    text = text.replace(
        default_pool,
        "# A private pool: see scripts/gen_proto.py.\n"
        "_POOL = _descriptor_pool.DescriptorPool()\n"
        "DESCRIPTOR = _POOL.AddSerializedFile(",
    )
    module.write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src")
