"""The ``remote`` runtime: a version directory holding ``remote.toml`` served
by the replicas it names (``endpoint_set.py``).

The version's signature is the replicas' own model metadata, asked for when
it loads, unless ``model.toml`` declares ``[[inputs]]`` and ``[[outputs]]``
(then it loads with no replica up, and requests wait for one). A request's
tensors go on in Triton's binary tensor extension, its parameters with them,
and its deadline as the ``timeout`` parameter (microseconds), so a replica
never works on a request its client has given up on.

Requests are not batched here (``forwards``): the replicas batch them, with
the requests they take from elsewhere.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout.errors import InferenceFailed, InvalidRequest, NotFound, Overloaded, TurnoutError, Unavailable
from turnout.model.runtimes.base import (
    NO_PARAMETERS,
    Forwarded,
    LoadContext,
    LoadedModel,
    ModelRuntime,
    Outputs,
    Relayed,
    Tensors,
)
from turnout.model.signature import Signature, TensorSpec
from turnout.protocol.client_codec import MalformedAnswer, decode_answer, encode_request, error_text
from turnout.protocol.rest_codec import TIMEOUT_HEADER
from turnout.routing.remote.endpoint_set import EndpointSet, RemoteObserver
from turnout.routing.remote.settings import REMOTE_FILE, RemoteSettings, read_settings, split_address

_BODY_JSON = b"content-type: application/json\r\n"
_BODY_BINARY = b"inference-header-content-length: %d\r\ncontent-type: application/octet-stream\r\n"
_ERRORS: Mapping[int, type[TurnoutError]] = {400: InvalidRequest, 404: NotFound, 429: Overloaded, 500: InferenceFailed}


class LoadedRemote(LoadedModel):
    asynchronous: ClassVar[bool] = True
    concurrent: ClassVar[bool] = True
    forwards: ClassVar[bool] = True
    warms_up: ClassVar[bool] = False

    def __init__(self, endpoints: EndpointSet, target: str, settings: RemoteSettings, found: Signature | None):
        self._set = endpoints
        self._infer_path = f"{target}/infer".encode()
        self._settings = settings
        self._found = found
        self._datatypes: dict[str, str] = {}

    @property
    def signature(self) -> Signature | None:
        return self._found

    @property
    def endpoints(self) -> EndpointSet:
        return self._set

    def serving(self, signature: Signature, max_batch_size: int) -> None:
        self._datatypes = {spec.name: spec.datatype for spec in signature.inputs}

    async def predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        return await self.predict_until(inputs, outputs, parameters, None)

    async def predict_until(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any], deadline: float | None
    ) -> Outputs:
        if deadline is None:
            deadline = time.monotonic() + self._settings.timeout_ms / 1000
        forwarded = dict(parameters)
        forwarded["timeout"] = max(int((deadline - time.monotonic()) * 1_000_000), 1)
        body, header_length = encode_request(inputs, self._datatypes, outputs, forwarded)
        headers = _BODY_BINARY % header_length
        answer, replica = await self._set.exchange(self._infer_path, headers, body, deadline)
        if answer.status != 200:
            error = _ERRORS.get(answer.status, InferenceFailed)
            raise error(f"replica {replica}: {error_text(answer.body)}")
        length = answer.headers.get(b"inference-header-content-length")
        try:
            return decode_answer(answer.body, int(length) if length is not None else None)
        except (MalformedAnswer, ValueError) as exc:
            raise Unavailable(f"replica {replica} answered with a broken response: {exc}") from None

    async def forward(self, body: bytes, header_length: int | None, deadline: float) -> Relayed:
        """The body unread, with what is left of the deadline (``turnout-timeout-us``: a turnout
        replica queues it no longer than that; other V2 servers ignore the header)."""
        answer, _ = await self._set.exchange(
            self._infer_path, _forward_headers(header_length, deadline), body, deadline
        )
        return answer

    def start_forward(self, body: bytes, header_length: int | None, deadline: float, done: Forwarded) -> bool:
        if not self._set.can_start():
            return False  # the first request: ``forward`` starts the set (and resolves its DNS name)
        self._set.start(self._infer_path, _forward_headers(header_length, deadline), body, deadline,
                        lambda answer, error, replica: done(answer, error))  # fmt: skip
        return True

    async def aclose(self) -> None:
        await self._set.close()


class RemoteRuntime(ModelRuntime):
    platform: ClassVar[str] = "remote"
    artifacts: ClassVar[tuple[str, ...]] = (REMOTE_FILE,)

    def __init__(self, observer_for: Any = None, wait_for_replicas: bool = True) -> None:
        # observer_for(model, version) -> RemoteObserver: the set's metrics, labelled (app/server.py)
        self._observer_for = observer_for
        # False: ask the replicas for the signature once, not for metadata_wait_seconds (`models validate`)
        self._wait = wait_for_replicas

    def instances(self, config: Any) -> int:
        return 1  # one set of connections; requests run on it concurrently

    def load(self, context: LoadContext) -> LoadedModel:
        version_dir = context.version_dir
        name, version = version_dir.parent.name, version_dir.name
        settings = read_settings(version_dir / REMOTE_FILE)
        model = settings.model or name
        target = f"/v2/models/{model}" + (f"/versions/{settings.version}" if settings.version else "")
        observer: RemoteObserver | None = self._observer_for(name, version) if self._observer_for else None
        endpoints = EndpointSet(f"model '{name}' version {version}", target, settings, observer)
        declared = context.config.declared_signature()
        found = None
        if declared is None or not declared.inputs or not declared.outputs:
            found = _metadata(settings, target, settings.metadata_wait_seconds if self._wait else 0.0)
        return LoadedRemote(endpoints, target, settings, found)


def _metadata(settings: RemoteSettings, target: str, wait: float) -> Signature:
    """The model's signature, as the first replica that answers reports it,
    waiting up to ``wait`` seconds for one (in a worker thread, blocking)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return _asked(settings, target)
        except Unavailable:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.5)  # replicas starting: there is nothing to wait on but their port


def _asked(settings: RemoteSettings, target: str) -> Signature:
    addresses = settings.replicas or [settings.dns or ""]
    problems = []
    for address in addresses:
        host, port = split_address(address)
        connection = http.client.HTTPConnection(host, port, timeout=settings.connect_timeout_ms / 1000 + 5)
        try:
            connection.request("GET", target)
            answer = connection.getresponse()
            body = answer.read(1024 * 1024)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            problems.append(f"{address}: {exc}")
            continue
        finally:
            connection.close()
        if answer.status != 200:
            problems.append(f"{address}: {answer.status} {body[:200].decode('utf-8', 'replace')}")
            continue
        try:
            document = json.loads(body)
            return Signature(_specs(document["inputs"]), _specs(document["outputs"]))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{address}: its model metadata is not V2's: {exc}")
    raise Unavailable(
        f"no replica told the model's signature within metadata_wait_seconds ({'; '.join(problems)}): "
        "start one, or declare [[inputs]] and [[outputs]] in model.toml"
    )


def _specs(items: Any) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"])) for t in items)


def _forward_headers(header_length: int | None, deadline: float) -> bytes:
    """How to read the body, and what is left of the deadline (``turnout-timeout-us``: a turnout
    replica queues it no longer than that; other V2 servers ignore the header)."""
    headers = _BODY_JSON if header_length is None else _BODY_BINARY % header_length
    remaining = max(int((deadline - time.monotonic()) * 1_000_000), 1)
    return headers + b"%s: %d\r\n" % (TIMEOUT_HEADER, remaining)
