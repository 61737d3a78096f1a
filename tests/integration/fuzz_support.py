"""What the decoder fuzzing modules share: a server of their own (24 MiB
bodies) with a REST client and a raw gRPC ModelInfer, valid requests for
all_types in both protocols to place values in or to mutate, the hypothesis
strategies both use, and the checks: refused or served (never a 5xx, INTERNAL,
UNKNOWN or a hang), and still serving correctly."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.support import ServerProcess
from turnout.protocol import raw
from turnout.protocol.datatypes import to_numpy
from turnout.transports.grpc.convert import CONTENTS_FIELD
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb

TIMEOUT = 20.0  # seconds: a call not answered by then counts as a hang
MAX_ERROR_BYTES = 8192  # an error names the input, never the megabytes it came with
INFER = "/v2/models/all_types/infer"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# what a hostile message may be answered with; never INTERNAL, UNKNOWN (a bug)
# or DEADLINE_EXCEEDED / UNAVAILABLE (a hang, a dropped connection)
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}


def fuzz(examples: int) -> settings:
    """Few examples a family (the whole file runs in well under a minute), no per-example deadline."""
    slow_to_build = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
    return settings(max_examples=examples, deadline=None, suppress_health_check=slow_to_build)


# all_types takes one [-1, 3] input of every datatype (in_<DT> -> out_<DT>, Identity)
DATATYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
DATATYPES += ["FP16", "FP32", "FP64", "BYTES"]
_JSON_DATA = {"BOOL": b"[true,false,true]", "BYTES": b'["a","b","c"]', "FP16": b"[0.5,1.5,2.5]"}
_JSON_DATA |= {"FP32": b"[1.5,2.5,3.5]", "FP64": b"[1.5,2.5,3.5]"}


def json_input(of: str, /, **replaced: bytes) -> bytes:
    """Input ``in_<of>`` as JSON, with fields replaced by the raw JSON given."""
    fields = {"name": b'"in_%s"' % of.encode(), "datatype": b'"%s"' % of.encode(), "shape": b"[1,3]"}
    fields["data"] = _JSON_DATA.get(of, b"[1,2,3]")
    fields.update(replaced)
    return b"{" + b",".join(b'"%s":%s' % (key.encode(), value) for key, value in fields.items()) + b"}"


def json_request(*inputs: bytes, instead_of: tuple[str, ...] = (), extra: bytes = b"") -> bytes:
    """A valid request for all_types, with ``inputs`` in place of the named ones' and ``extra`` fields."""
    others = [json_input(dt) for dt in DATATYPES if dt not in instead_of]
    return b'{"inputs":[' + b",".join([*inputs, *others]) + b"]" + extra + b"}"


# where a generated value goes in an otherwise valid request ("@@")
PLACES = {
    "body": b"@@",
    "data": json_request(json_input("FP32", data=b"[1.5,2.5,@@]"), instead_of=("FP32",)),
    "int_data": json_request(json_input("INT64", data=b"[1,2,@@]"), instead_of=("INT64",)),
    "uint_data": json_request(json_input("UINT64", data=b"[@@,2,3]"), instead_of=("UINT64",)),
    "bytes_data": json_request(json_input("BYTES", data=b'["a",@@,"c"]'), instead_of=("BYTES",)),
    "whole_data": json_request(json_input("FP64", data=b"@@"), instead_of=("FP64",)),
    "shape": json_request(json_input("INT8", shape=b"[1,@@]"), instead_of=("INT8",)),
    "name": json_request(json_input("FP32", name=b"@@"), instead_of=("FP32",)),
    "datatype": json_request(json_input("UINT8", datatype=b"@@"), instead_of=("UINT8",)),
    "input_parameters": json_request(json_input("FP32", parameters=b'{"k":@@}'), instead_of=("FP32",)),
    "binary_data_size": json_request(json_input("INT16", parameters=b'{"binary_data_size":@@}'), instead_of=("INT16",)),
    "parameters": json_request(extra=b',"parameters":{"k":@@}'),
    "id": json_request(extra=b',"id":@@'),
    "outputs": json_request(extra=b',"outputs":[{"name":"out_FP32","parameters":{"binary_data":@@}}]'),
    "output_name": json_request(extra=b',"outputs":[{"name":@@}]'),
    "key": json_request(extra=b",@@:1"),  # an object's key: strings only
}
VALUE_PLACES = sorted(set(PLACES) - {"key"})
STRING_PLACES = ["bytes_data", "name", "datatype", "input_parameters", "parameters", "id", "output_name", "key"]


def body_with(place: str, value: bytes) -> bytes:
    return PLACES[place].replace(b"@@", value)


VALID_REST = [
    body_with("data", b"4.5"),
    body_with("bytes_data", b'"b"'),
    json_request(extra=b',"id":"r1","outputs":[{"name":"out_BOOL"}],"parameters":{"binary_data_output":true}'),
]


@pytest.fixture(scope="module")
def fuzzed(test_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: a 24 MiB body limit lets the 8 MB strings reach the decoders."""
    process = ServerProcess(
        test_repo, "--no-strict-readiness", "--max-body-bytes", str(24 << 20), log_dir=tmp_path_factory.mktemp("fuzz")
    )
    with process:
        yield process
    assert "Traceback" not in process.log(), process.log()[-3000:]  # no 500 or INTERNAL that the checks missed


@pytest.fixture(scope="module")
def rest(fuzzed: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def model_infer(fuzzed: ServerProcess) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(fuzzed.grpc_address, options=options) as channel:
        yield channel.unary_unary(MODEL_INFER)  # no serializers: bytes in, bytes out


def refused_or_served(client: httpx.Client, body: bytes, headers: dict[str, str] | None = None) -> None:
    answer = client.post(INFER, content=body, headers={"content-type": "application/json", **(headers or {})})
    assert answer.status_code < 500, f"{answer.status_code} {answer.text[:300]} for {body[:200]!r}"
    if answer.status_code != 200:  # an error says why in a few lines, never echoing the body
        assert "error" in answer.json() and len(answer.content) < MAX_ERROR_BYTES, answer.text[:300]


def grpc_refused_or_served(call: grpc.UnaryUnaryMultiCallable, message: bytes) -> None:
    try:
        pb.ModelInferResponse.FromString(call(message, timeout=TIMEOUT))
    except grpc.RpcError as exc:
        assert exc.code() in REFUSALS, f"{exc.code()} {exc.details()[:300]} for {message[:200]!r}"
        # grpcio's own statuses (a 6 MB grpc-message trailer it refused) say "Stream removed"
        assert len(exc.details()) < MAX_ERROR_BYTES and "Stream removed" not in exc.details(), exc.details()[:300]


def still_serves(server: ServerProcess, client: httpx.Client, call: grpc.UnaryUnaryMultiCallable) -> None:
    assert server.process is not None and server.process.poll() is None
    answer = client.post(INFER, content=VALID_REST[0])
    assert answer.status_code == 200, answer.text
    assert next(o for o in answer.json()["outputs"] if o["name"] == "out_FP32")["data"] == [1.5, 2.5, 4.5]
    reply = pb.ModelInferResponse.FromString(call(VALID_GRPC[0], timeout=TIMEOUT))
    outputs = dict(zip((o.name for o in reply.outputs), reply.raw_output_contents, strict=True))
    assert outputs["out_INT32"] == struct.pack("<3i", 1, 0, 1)


DEPTHS = st.sampled_from([63, 64, 65, 1023, 1024, 1025, 200_000]) | st.integers(1, 200_000)
NESTERS = st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"a":[', b"]}")])


MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "delete", "insert", "repeat"]), st.integers(0, 10**6), st.binary(max_size=12)),
    min_size=1,
    max_size=6,
)


def mutate(body: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(body)
    for kind, where, junk in mutations:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << (where % 8)
        elif kind == "delete":
            del data[at : at + len(junk) + 1]
        elif kind == "insert":
            data[at:at] = junk
        else:
            data[at:at] = data[at : at + 1 + len(junk)] * 3
    return bytes(data)


def grpc_request(model_name: str = "all_types", raw_inputs: bool = True) -> pb.ModelInferRequest:
    """A valid ModelInfer for all_types: every input raw (FP16 has no typed
    field) or, without FP16's, typed; the typed one leaves FP16 to add."""
    message = pb.ModelInferRequest(model_name=model_name, id="g1")
    for datatype in DATATYPES:
        tensor = message.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=[1, 3])
        values = [b"a", b"bc", b""] if datatype == "BYTES" else [1, 0, 1]
        if raw_inputs:
            array = np.array(values, dtype=object if datatype == "BYTES" else to_numpy(datatype))
            message.raw_input_contents.append(raw.encode(array, datatype))
        elif datatype != "FP16":
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    return message


def grpc_valid() -> list[bytes]:
    typed = grpc_request(raw_inputs=False)
    del typed.inputs[DATATYPES.index("FP16")]
    typed.parameters["k"].string_param = "v"
    return [grpc_request().SerializeToString(), typed.SerializeToString()]


VALID_GRPC = grpc_valid()
