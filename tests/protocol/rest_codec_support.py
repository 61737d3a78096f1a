"""What the REST codec's tests share: a body decoded as the server decodes
it, for model ``m`` version ``2``, and a JSON body from a document."""

from __future__ import annotations

from typing import Any

import orjson

from turnout.protocol import rest_codec
from turnout.protocol.types import InferenceRequest


def decode(body: bytes, header_length: int | None = None) -> InferenceRequest:
    return rest_codec.decode_request(body, header_length, "m", "2")


def json_body(document: Any) -> bytes:
    return orjson.dumps(document)
