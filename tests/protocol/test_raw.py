"""Raw little-endian tensors: the binary extension's payload and gRPC's raw contents.

The expected bytes are built with :mod:`struct`, independently of numpy, so a
byte-order or width mistake in the codec cannot cancel itself out.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from turnout.errors import Code, InvalidRequest
from turnout.protocol import raw
from turnout.protocol.datatypes import to_numpy

# datatype, struct format character, six values including the datatype's extremes
# (floats exactly representable, so comparisons can be exact)
FIXED_WIDTH = [
    ("BOOL", "?", [True, False, True, True, False, False]),
    ("INT8", "b", [-128, -1, 0, 1, 100, 127]),
    ("INT16", "h", [-32768, -1, 0, 1, 1000, 32767]),
    ("INT32", "i", [-(2**31), -1, 0, 1, 100_000, 2**31 - 1]),
    ("INT64", "q", [-(2**63), -1, 0, 1, 2**40, 2**63 - 1]),
    ("UINT8", "B", [0, 1, 2, 127, 128, 255]),
    ("UINT16", "H", [0, 1, 2, 255, 256, 65535]),
    ("UINT32", "I", [0, 1, 2, 2**16, 2**31, 2**32 - 1]),
    ("UINT64", "Q", [0, 1, 2, 2**32, 2**63, 2**64 - 1]),
    ("FP16", "e", [0.0, -1.5, 2.0**-14, 2.0, 1000.5, 65504.0]),
    ("FP32", "f", [0.0, -1.5, 3.25, 2.0**-100, 2.0**100, -2.0]),
    ("FP64", "d", [0.0, -1.5, 3.25, 1e-300, 1e300, -2.0]),
]
FIXED_IDS = [row[0] for row in FIXED_WIDTH]


def framed(*items: bytes) -> bytes:
    """BYTES elements in wire form: each preceded by its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def object_array(items: list[object], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


@pytest.mark.parametrize(("datatype", "fmt", "values"), FIXED_WIDTH, ids=FIXED_IDS)
def test_encode_writes_little_endian(datatype: str, fmt: str, values: list[object]) -> None:
    array = np.array(values, dtype=to_numpy(datatype)).reshape(2, 3)

    assert raw.encode(array, datatype) == struct.pack(f"<{len(values)}{fmt}", *values)


@pytest.mark.parametrize(("datatype", "fmt", "values"), FIXED_WIDTH, ids=FIXED_IDS)
def test_decode_reads_little_endian(datatype: str, fmt: str, values: list[object]) -> None:
    buffer = struct.pack(f"<{len(values)}{fmt}", *values)

    array = raw.decode(buffer, datatype, (2, 3), "x")

    assert array.shape == (2, 3)
    assert array.dtype == to_numpy(datatype)
    assert array.reshape(-1).tolist() == values


@pytest.mark.parametrize(("datatype", "fmt", "values"), FIXED_WIDTH, ids=FIXED_IDS)
def test_round_trip(datatype: str, fmt: str, values: list[object]) -> None:
    array = np.array(values, dtype=to_numpy(datatype)).reshape(3, 1, 2)

    decoded = raw.decode(raw.encode(array, datatype), datatype, (3, 1, 2), "x")

    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == array.dtype


@pytest.mark.parametrize(("datatype", "fmt", "values"), FIXED_WIDTH, ids=FIXED_IDS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_decode_rejects_a_buffer_of_the_wrong_size(datatype: str, fmt: str, values: list[object], delta: int) -> None:
    size = struct.calcsize(f"<6{fmt}")
    buffer = bytes(size + delta)

    with pytest.raises(InvalidRequest) as caught:
        raw.decode(buffer, datatype, (2, 3), "pixels")

    assert caught.value.code is Code.INVALID
    assert caught.value.message == (
        f"input 'pixels': shape [2, 3] of {datatype} needs {size} bytes, got {size + delta}"
    )


def test_encode_converts_big_endian_arrays() -> None:
    array = np.array([1, -2, 3], dtype=">i4")

    assert raw.encode(array, "INT32") == struct.pack("<3i", 1, -2, 3)


def test_encode_converts_to_the_declared_datatype() -> None:
    assert raw.encode(np.array([1.5, -2.0]), "FP32") == struct.pack("<2f", 1.5, -2.0)


def test_encode_is_row_major_for_non_contiguous_arrays() -> None:
    array = np.arange(6, dtype=np.int16).reshape(2, 3).T  # logical order 0 3 1 4 2 5

    assert raw.encode(array, "INT16") == struct.pack("<6h", 0, 3, 1, 4, 2, 5)


def test_decode_accepts_a_memoryview_slice() -> None:
    body = b"JSON" + struct.pack("<2d", 0.5, -4.0) + b"tail"

    array = raw.decode(memoryview(body)[4:20], "FP64", (2,), "x")

    assert array.tolist() == [0.5, -4.0]


@pytest.mark.parametrize("datatype", [*FIXED_IDS, "BYTES"])
def test_empty_tensor_round_trips(datatype: str) -> None:
    decoded = raw.decode(b"", datatype, (2, 0), "x")

    assert decoded.shape == (2, 0)
    assert decoded.dtype == to_numpy(datatype)
    assert raw.encode(decoded, datatype) == b""


def test_scalar_shape_holds_one_element() -> None:
    decoded = raw.decode(struct.pack("<q", 42), "INT64", (), "x")

    assert decoded.shape == ()
    assert decoded.item() == 42


def test_bytes_encode_frames_each_element() -> None:
    array = object_array([b"ab", b"", b"\x00\xff\x10"], (3,))

    assert raw.encode(array, "BYTES") == (b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x03\x00\x00\x00\x00\xff\x10")


def test_bytes_encode_accepts_str_and_other_byte_likes() -> None:
    array = object_array(["h\u00e9", np.bytes_(b"np"), bytearray(b"ba"), memoryview(b"mv")], (2, 2))

    assert raw.encode(array, "BYTES") == framed("h\u00e9".encode(), b"np", b"ba", b"mv")


def test_bytes_encode_of_a_non_bytes_object_uses_its_text() -> None:
    assert raw.encode(object_array([7, 2.5], (2,)), "BYTES") == framed(b"7", b"2.5")


def test_bytes_decode() -> None:
    items = [b"first", b"", b"\x00\x01\x02", b"x" * 300]

    decoded = raw.decode(framed(*items), "BYTES", (2, 2), "x")

    assert decoded.dtype == object
    assert decoded.shape == (2, 2)
    assert decoded.reshape(-1).tolist() == items
    assert all(type(item) is bytes for item in decoded.reshape(-1))


def test_bytes_round_trip() -> None:
    array = object_array([b"a", b"bc", b"", b"\xff" * 70_000], (4, 1))

    decoded = raw.decode(raw.encode(array, "BYTES"), "BYTES", (4, 1), "x")

    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    ("buffer", "element"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x00\x00", 0),
        (framed(b"a") + b"\x01\x00\x00", 1),
    ],
)
def test_bytes_decode_rejects_a_truncated_length_prefix(buffer: bytes, element: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        raw.decode(buffer, "BYTES", (2,), "text")

    assert caught.value.message == f"input 'text': BYTES element {element} has a truncated length prefix"


def test_bytes_decode_rejects_a_length_beyond_the_buffer() -> None:
    buffer = framed(b"ok") + struct.pack("<I", 10) + b"abc"

    with pytest.raises(InvalidRequest) as caught:
        raw.decode(buffer, "BYTES", (2,), "text")

    assert caught.value.message == "input 'text': BYTES element 1 declares 10 bytes, only 3 remain"


@pytest.mark.parametrize("items", [[b"a"], [b"a", b"b", b"c"], []])
def test_bytes_decode_rejects_the_wrong_element_count(items: list[bytes]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        raw.decode(framed(*items), "BYTES", (1, 2), "text")

    assert caught.value.message == f"input 'text': expected 2 BYTES elements, got {len(items)}"


def test_as_bytes() -> None:
    assert raw.as_bytes(b"\xff") == b"\xff"
    assert raw.as_bytes("\u00e9") == b"\xc3\xa9"
    assert raw.as_bytes(np.bytes_(b"ab")) == b"ab"
    assert raw.as_bytes(np.str_("cd")) == b"cd"
    assert raw.as_bytes(12) == b"12"
