"""JSON ``data`` arrays <-> numpy: strict about datatypes, ranges and element
counts. Every test runs twice: with ``data`` as orjson gives it (Python
lists) and as the REST decoder hands it over (a simdjson Array, unconverted),
since the second takes a fast path for flat numeric arrays that must agree
with the first, errors included."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import simdjson

from turnout.errors import Code, InvalidRequest
from turnout.protocol import json_data
from turnout.protocol.datatypes import to_numpy

# datatype, four JSON values (as orjson parses them) including the datatype's extremes
VALUES: list[tuple[str, list[Any]]] = [
    ("BOOL", [True, False, False, True]),
    ("INT8", [-128, -1, 0, 127]),
    ("INT16", [-32768, -1, 0, 32767]),
    ("INT32", [-(2**31), -1, 0, 2**31 - 1]),
    ("INT64", [-(2**63), -1, 0, 2**63 - 1]),
    ("UINT8", [0, 1, 128, 255]),
    ("UINT16", [0, 1, 256, 65535]),
    ("UINT32", [0, 1, 2**31, 2**32 - 1]),
    ("UINT64", [0, 1, 2**63, 2**64 - 1]),
    ("FP16", [0.5, -1.5, 0.0, 65504.0]),
    ("FP32", [0.5, -1.5, 0.0, 1048576.0]),
    ("FP64", [0.5, -1.5, 0.0, 1e300]),
]
IDS = [row[0] for row in VALUES]


PARSERS = ["orjson", "simdjson"]
parser = PARSERS[0]


@pytest.fixture(autouse=True, params=PARSERS)
def each_parser(request: pytest.FixtureRequest) -> Any:
    global parser
    parser = request.param
    yield
    parser = PARSERS[0]


def as_parsed(data: Any) -> Any:
    """``data`` as the decoder receives it from the parser under test."""
    if parser == "orjson" or not isinstance(data, list):
        return data
    try:
        text = orjson.dumps({"data": data})
    except TypeError:  # not JSON (a test of Python values): as is
        return data
    return simdjson.Parser().parse(text)["data"]


def decode_json(text: str, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode ``data`` as it arrives: parsed from JSON text."""
    return json_data.decode(as_parsed(orjson.loads(text)), datatype, shape, "x")


def rejected(data: Any, datatype: str, shape: tuple[int, ...], name: str = "x") -> str:
    with pytest.raises(InvalidRequest) as caught:
        json_data.decode(as_parsed(data), datatype, shape, name)
    assert caught.value.code is Code.INVALID
    return caught.value.message


@pytest.mark.parametrize(("datatype", "values"), VALUES, ids=IDS)
def test_decode_flat(datatype: str, values: list[Any]) -> None:
    array = decode_json(orjson.dumps(values).decode(), datatype, (2, 2))

    assert array.dtype == to_numpy(datatype)
    assert array.shape == (2, 2)
    assert array.reshape(-1).tolist() == values


@pytest.mark.parametrize(("datatype", "values"), VALUES, ids=IDS)
def test_decode_nested_equals_flat(datatype: str, values: list[Any]) -> None:
    nested = [values[:2], values[2:]]

    array = decode_json(orjson.dumps(nested).decode(), datatype, (2, 2))

    assert array.dtype == to_numpy(datatype)
    assert array.tolist() == nested


def test_decode_bytes_encodes_strings_as_utf8() -> None:
    array = decode_json('[["plain", ""], ["h\\u00e9", "\\u65e5\\u672c"]]', "BYTES", (4,))

    assert array.dtype == object
    assert array.tolist() == [b"plain", b"", "h\u00e9".encode(), "\u65e5\u672c".encode()]


def test_decode_integers_into_floating_point() -> None:
    array = decode_json("[1, -2, 3]", "FP32", (3,))

    assert array.dtype == np.float32
    assert array.tolist() == [1.0, -2.0, 3.0]


@pytest.mark.parametrize(("datatype", "values"), VALUES, ids=IDS)
def test_round_trip_through_json_text(datatype: str, values: list[Any]) -> None:
    array = np.array(values, dtype=to_numpy(datatype)).reshape(2, 2)

    text = orjson.dumps(json_data.encode(array, datatype, "y"), option=orjson.OPT_SERIALIZE_NUMPY)

    assert orjson.loads(text) == values
    np.testing.assert_array_equal(decode_json(text.decode(), datatype, (2, 2)), array)


@pytest.mark.parametrize(("data", "shape", "count"), [([1, 2, 3, 4, 5], (2, 3), 5), ([[1, 2], [3, 4]], (5,), 4)])
def test_decode_rejects_the_wrong_element_count(data: Any, shape: tuple[int, ...], count: int) -> None:
    expected = int(np.prod(shape))

    message = rejected(data, "INT32", shape, name="ids")

    assert message == f"input 'ids': shape {list(shape)} has {expected} elements but data has {count}"


def test_decode_rejects_bytes_with_the_wrong_element_count() -> None:
    assert rejected(["a", ["b", "c"]], "BYTES", (2,), name="words") == (
        "input 'words': shape [2] has 2 elements but data has 3"
    )


@pytest.mark.parametrize("data", [[[1, 2], [3]], [[1, 2], 3], [[[1], [2]], [3, 4]]])
def test_decode_rejects_ragged_nesting(data: Any) -> None:
    assert "input 'x': data is not a regular array" in rejected(data, "INT32", (3,))


@pytest.mark.parametrize(
    ("data", "datatype", "holds"),
    [
        (["1.0", "2.0"], "FP32", "strings"),
        ([1, "2"], "INT64", "strings"),
        ([1.5, 2.0], "INT64", "floating-point numbers"),
        ([1.0, 2.0], "INT32", "floating-point numbers"),
        ([2.5], "UINT8", "floating-point numbers"),
        ([True, False], "INT32", "booleans"),
        ([True, False], "FP32", "booleans"),
        ([1, 0], "BOOL", "integers"),
        ([1.0], "BOOL", "floating-point numbers"),
        (["true"], "BOOL", "strings"),
        ([1, None], "FP64", "mixed values"),
        ([{"a": 1}], "INT8", "mixed values"),
        (None, "INT32", "mixed values"),
    ],
)
def test_decode_rejects_values_of_another_type(data: Any, datatype: str, holds: str) -> None:
    message = rejected(data, datatype, (np.asarray(data, dtype=object).size,), name="v")

    assert message == f"input 'v': data holds {holds}, which is not {datatype}"


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("INT8", 128),
        ("INT8", -129),
        ("INT16", 32768),
        ("INT16", -32769),
        ("INT32", 2**31),
        ("INT32", -(2**31) - 1),
        ("INT64", 2**63),
        ("UINT8", 300),
        ("UINT8", 256),
        ("UINT8", -1),
        ("UINT16", 65536),
        ("UINT32", 2**32),
        ("UINT32", -1),
        ("UINT64", -1),
    ],
)
def test_decode_rejects_out_of_range_integers(datatype: str, value: int) -> None:
    assert rejected([0, value], datatype, (2,), name="n") == f"input 'n': a value is out of range for {datatype}"


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("FP16", 65520.0), ("FP16", -1e6), ("FP16", 70000), ("FP32", 1e39), ("FP32", -3.5e38)],
)
def test_decode_rejects_floats_beyond_the_datatype(datatype: str, value: float) -> None:
    # (orjson itself refuses numbers beyond FP64, so these are the narrower float types)
    with pytest.raises(InvalidRequest) as caught:
        decode_json(f"[1.0, {value!r}]", datatype, (2,))

    assert caught.value.message == f"input 'x': a value is out of range for {datatype}"


def test_decode_keeps_floats_at_the_datatype_limits() -> None:
    assert decode_json("[65504.0, -65504.0, 1e-8]", "FP16", (3,)).tolist() == [65504.0, -65504.0, 0.0]
    assert decode_json("[3.4e38]", "FP32", (1,)).tolist() == [np.float32(3.4e38)]


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_decode_rejects_integers_beyond_64_bits(value: int) -> None:
    # numpy cannot hold these as integers at all, so they are not INT64/UINT64 values
    assert "input 'n'" in rejected([value], "UINT64" if value > 0 else "INT64", (1,), name="n")


@pytest.mark.parametrize(("data", "datatype"), [([1, "a"], "BYTES"), ([["a"], [2]], "BYTES"), ({"a": "b"}, "BYTES")])
def test_decode_bytes_rejects_non_strings(data: Any, datatype: str) -> None:
    assert rejected(data, datatype, (2,), name="s").startswith("input 's': BYTES data must be strings, got ")


@pytest.mark.parametrize("datatype", [*IDS, "BYTES"])
def test_decode_empty(datatype: str) -> None:
    array = json_data.decode(as_parsed([]), datatype, (0, 3), "x")

    assert array.shape == (0, 3)
    assert array.dtype == to_numpy(datatype)


def test_decode_scalar_shape() -> None:
    array = json_data.decode(as_parsed([7]), "INT32", (), "x")

    assert array.shape == ()
    assert array.item() == 7


def test_encode_numeric_is_flat_contiguous_and_of_the_datatype() -> None:
    array = np.arange(6, dtype=np.float64).reshape(2, 3).T  # logical order 0 3 1 4 2 5

    encoded = json_data.encode(array, "FP32", "y")

    assert isinstance(encoded, np.ndarray)
    assert encoded.dtype == np.float32
    assert encoded.flags.c_contiguous
    assert encoded.tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_encode_fp16_serialises_as_numbers() -> None:
    array = np.array([[0.5, -1.25], [65504.0, 0.0]], dtype=np.float16)

    encoded = json_data.encode(array, "FP16", "half")

    assert orjson.loads(orjson.dumps(encoded, option=orjson.OPT_SERIALIZE_NUMPY)) == [0.5, -1.25, 65504.0, 0.0]


def test_encode_big_endian_array_is_serialisable() -> None:
    # orjson refuses non-native byte order; the codec must hand it little-endian data
    encoded = json_data.encode(np.array([1, -2], dtype=">i4"), "INT32", "y")

    assert orjson.dumps(encoded, option=orjson.OPT_SERIALIZE_NUMPY) == b"[1,-2]"


def test_encode_bytes_as_strings() -> None:
    array = np.empty((2, 2), dtype=object)
    array[:] = [[b"a", "b"], ["h\u00e9".encode(), np.bytes_(b"")]]

    assert json_data.encode(array, "BYTES", "words") == ["a", "b", "h\u00e9", ""]


def test_encode_bytes_that_are_not_utf8_is_an_error() -> None:
    array = np.empty(2, dtype=object)
    array[:] = [b"ok", b"\xff\xfe"]

    with pytest.raises(InvalidRequest) as caught:
        json_data.encode(array, "BYTES", "blob")

    assert caught.value.message == "output 'blob' holds bytes that are not UTF-8; request it with binary_data"


def test_integers_beyond_64_bits_are_out_of_range() -> None:
    """orjson reads an integer past 2**64 as a float; the message should still say range."""
    data = orjson.loads("[18446744073709551616, 1]")
    with pytest.raises(InvalidRequest, match="out of range for UINT64"):
        json_data.decode(as_parsed(data), "UINT64", (2,), "x")
