"""The stream message schema: a versioned envelope around a V2 inference request,
and the entries written back (a V2 response, a V2 error, a dead letter).

Pure: Redis entry fields in, decoded requests out, and field maps to write.
The request and response bodies are exactly the V2 REST bodies, including
Triton's binary tensor extension, so producers reuse what they already send
over HTTP.

Request entry (XADD to the model's request stream)::

    v             "1"                      envelope version (required)
    reply_to      stream for the result    (required)
    request       V2 inference request     JSON, or JSON + binary tensors
    header_length length of the JSON part  only with binary tensors
    model_version "2"                      optional: else the endpoint's routing
    traceparent   W3C trace context        optional: the request's trace continues it

Result entry (XADD to ``reply_to``)::

    v, kind="response", id, entry, model, model_version, response[, header_length]
    v, kind="error",    id, entry, model, code, error   (error: {"error": "..."})

``id`` is the request's own ``id``, or its entry id when it has none;
``entry`` is always the request's entry id. Both let a reader deduplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from turnout.errors import InvalidRequest
from turnout.protocol import rest_codec
from turnout.protocol.limits import InputLimits
from turnout.protocol.types import InferenceRequest, InferenceResponse

ENVELOPE_VERSION = "1"
Fields = Mapping[bytes, bytes]  # an entry as read
Entry = dict[str | bytes, str | bytes]  # an entry to write


class UnreadableEnvelope(Exception):
    """The entry is not an envelope turnout can answer (no reply stream, unknown
    version): no retry can help, so it goes to the dead-letter stream."""


@dataclass(frozen=True, slots=True)
class Envelope:
    entry_id: str
    reply_to: str
    body: bytes
    header_length: int | None
    model_version: str | None
    trace_context: dict[str, str]  # W3C traceparent / tracestate, when the producer sent them


def open_envelope(entry_id: str, fields: Fields) -> Envelope:
    version = _text(fields, b"v")
    if version != ENVELOPE_VERSION:
        found = "none" if version is None else repr(version[:20])
        raise UnreadableEnvelope(f"envelope version must be {ENVELOPE_VERSION!r}, found {found}")
    reply_to = _text(fields, b"reply_to")
    if not reply_to:
        raise UnreadableEnvelope("no 'reply_to' stream to answer on")
    body = fields.get(b"request")
    if body is None:
        raise UnreadableEnvelope("no 'request' field")
    header_length: int | None = None
    raw_length = _text(fields, b"header_length")
    if raw_length is not None:
        if not raw_length.isdigit():
            raise UnreadableEnvelope(f"'header_length' must be a byte count, found {raw_length[:20]!r}")
        header_length = int(raw_length)
    trace_context = {key: value for key in ("traceparent", "tracestate") if (value := _text(fields, key.encode()))}
    return Envelope(entry_id, reply_to, body, header_length, _text(fields, b"model_version") or None, trace_context)


def decode(envelope: Envelope, model: str, limits: InputLimits) -> InferenceRequest:
    """The envelope's V2 request for ``model``; ``InvalidRequest`` when it is malformed.

    A request without an ``id`` takes its entry id, so every result names its request.
    """
    request = rest_codec.decode_request(envelope.body, envelope.header_length, model, envelope.model_version, limits)
    if request.id is None:
        request.id = envelope.entry_id
    return request


def response_fields(envelope: Envelope, request: InferenceRequest, response: InferenceResponse) -> Entry:
    encoded = rest_codec.encode_response(response, request)
    fields: Entry = {
        "v": ENVELOPE_VERSION,
        "kind": "response",
        "id": response.id or request.id or envelope.entry_id,
        "entry": envelope.entry_id,
        "model": response.model_name,
        "model_version": response.model_version,
        "response": encoded.body,
    }
    if encoded.header_length is not None:
        fields["header_length"] = str(encoded.header_length)
    return fields


def error_fields(entry_id: str, request_id: str | None, model: str, code: str, message: str) -> Entry:
    return {
        "v": ENVELOPE_VERSION,
        "kind": "error",
        "id": request_id or entry_id,
        "entry": entry_id,
        "model": model,
        "code": code,
        "error": rest_codec.dumps({"error": message}),
    }


def dead_letter_fields(entry_id: str, fields: Fields, stream: str, reason: str, deliveries: int) -> Entry:
    """The original entry's fields, with why it was given up on."""
    letter: Entry = {k: v for k, v in fields.items() if not k.startswith(b"dead_")}
    letter.update(
        {"dead_entry": entry_id, "dead_stream": stream, "dead_reason": reason, "dead_deliveries": str(deliveries)}
    )
    return letter


def request_id_of(envelope: Envelope) -> str | None:
    """The request's ``id`` when the body can still be read, for an error reply
    to a request that failed validation; else None (the entry id stands in)."""
    try:
        json_part = envelope.body if envelope.header_length is None else envelope.body[: envelope.header_length]
        document = rest_codec.parse_object(json_part)
    except (InvalidRequest, ValueError):
        return None
    found = document.get("id")
    return found if isinstance(found, str) else None


def reply_stream_of(fields: Fields) -> str | None:
    """The ``reply_to`` of an entry that is otherwise unreadable, if it has one."""
    try:
        return _text(fields, b"reply_to") or None
    except UnreadableEnvelope:
        return None


def _text(fields: Fields, key: bytes) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableEnvelope(f"field '{key.decode()}' is not UTF-8 text") from None
