"""``model.toml``: the schema of a model's configuration and its loader.

Every field is optional; a directory holding only ``<version>/model.onnx`` is a
valid model. Unknown fields are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from turnout.errors import ConfigError
from turnout.model.signature import Signature, TensorSpec
from turnout.protocol.datatypes import DATATYPES

CONFIG_FILE = "model.toml"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Section(BaseModel):
    # strict: TOML values are already typed, so "8", 8.0 or true for an integer is a mistake, not a value
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TensorConfig(_Section):
    name: Annotated[str, Field(min_length=1)]
    datatype: str
    shape: list[int]

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; one of {sorted(DATATYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _dimensions(cls, value: list[int]) -> list[int]:
        if any(d < -1 for d in value):
            raise ValueError("dimensions are sizes >= 0, or -1 for any size")
        return value

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class VersionPolicy(_Section):
    """Which version directories are served: exactly one of the three."""

    latest: Annotated[int, Field(ge=1)] | None = None
    all: bool = False
    specific: list[Annotated[int, Field(ge=1)]] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = (self.latest is not None) + self.all + (self.specific is not None)
        if chosen != 1:
            raise ValueError("set exactly one of latest = N, all = true, specific = [versions]")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those on disk, ascending."""
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific)]
        assert self.latest is not None
        return ordered[-self.latest :]


class BatchingConfig(_Section):
    max_queue_delay_ms: Annotated[float, Field(ge=0)] = 0.0
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = []
    max_queue_size: Annotated[int, Field(ge=1)] = 1024
    timeout_ms: Annotated[float, Field(gt=0)] = 30_000.0


class InstancesConfig(_Section):
    count: Annotated[int, Field(ge=1, le=64)] = 1
    # above 0: the instance threads run at a lower CPU priority (Unix nice),
    # for models whose answers may wait, such as shadow variants
    niceness: Annotated[int, Field(ge=0, le=19)] = 0


class DriftConfig(_Section):
    """Drift against the version's profile.json (``turnout profile``)."""

    window_rows: Annotated[int, Field(ge=10)] = 1000  # rows per window the statistics are computed over
    warn_psi: Annotated[float, Field(gt=0)] = 0.1  # a feature's PSI above this is logged (info): moving
    alert_psi: Annotated[float, Field(gt=0)] = 0.2  # ...above this, logged as drift and alerted (--alert-webhook)


class SloConfig(_Section):
    """Objectives judged per window of requests; a miss is alerted (--alert-webhook) until met again."""

    window_requests: Annotated[int, Field(ge=10)] = 1000
    p99_ms: Annotated[float, Field(gt=0)] | None = None
    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None  # failures on the server's side


class StreamConfig(_Section):
    """This model's Redis stream, when the server consumes streams (``--stream``)."""

    enabled: bool = True
    name: Annotated[str, Field(min_length=1)] | None = None  # default: turnout:<model>:requests
    dead_letter: Annotated[str, Field(min_length=1)] | None = None  # default: <name>:dead
    # entries read ahead and in flight; default: half the batcher's queue (max_queue_size // 2)
    prefetch: Annotated[int, Field(ge=1)] | None = None


class CacheConfig(_Section):
    """Answers kept in memory and served again for the same request (serving/response_cache.py)."""

    enabled: bool = False
    max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024  # the arrays held, least recently used dropped first
    ttl_seconds: Annotated[float, Field(gt=0)] | None = None  # None: an answer is served until it is dropped
    # also in the Redis of `turnout serve --cache-redis`, shared by replicas (serving/shared_cache.py)
    shared: bool = False
    # requests with more input bytes than this are answered without the cache: their key is a hash of
    # every byte, on the event loop (sha256: about 0.7 ms a megabyte here), so a huge tensor would stall it
    max_input_bytes: Annotated[int, Field(ge=1)] = 1024 * 1024


class RuntimeConfig(_Section):
    """Which runtime loads the model, and its own options (checked by the
    runtime's schema, not this one). ``runtime = "onnx"`` is short for
    ``[runtime] name = "onnx"``."""

    # a runtime's name (built in, or from the turnout.runtimes entry point group), or
    # "package.module:Class" (runs code from that module: trusted models only)
    name: Annotated[str, Field(min_length=1)] = "onnx"
    options: dict[str, Any] = {}


# Keys that moved out of the shared schema into the ONNX runtime's own options.
MOVED = {
    ("instances", "intra_op_threads"): "[runtime.options] intra_op_threads",
    ("instances", "inter_op_threads"): "[runtime.options] inter_op_threads",
    ("instances", "execution_mode"): "[runtime.options] execution_mode",
    ("optimization", "graph_level"): "[runtime.options] graph_level",
}


class ModelConfig(_Section):
    runtime: RuntimeConfig = RuntimeConfig()
    # the model's files may run code when loaded (pickles): allowed only with
    # this and a server started with --allow-trusted-models
    trusted: bool = False
    # None: batch when every input and output has a variable first dimension
    max_batch_size: Annotated[int, Field(ge=0)] | None = None
    warmup: bool = True
    version_policy: VersionPolicy = VersionPolicy(latest=1)
    # the version requests that name none get (if live); unset: the highest live one
    default_version: Annotated[int, Field(ge=1)] | None = None
    # version -> the sha256 (hex) its artifact must have; a "<artifact>.sha256" file beside it does the same
    checksums: dict[str, str] = {}
    batching: BatchingConfig = BatchingConfig()
    instances: InstancesConfig = InstancesConfig()
    drift: DriftConfig = DriftConfig()
    slo: SloConfig = SloConfig()
    stream: StreamConfig = StreamConfig()
    cache: CacheConfig = CacheConfig()
    inputs: list[TensorConfig] | None = None
    outputs: list[TensorConfig] | None = None
    # this model as an endpoint routing to variants: the routing layer reads the
    # table (routing/document.py, ``from_config``), so this schema never learns policies
    routing: dict[str, Any] | None = None

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime_by_name(cls, value: object) -> object:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _checksums_are_sha256(self) -> Self:
        for version, digest in self.checksums.items():
            if not version.isdigit() or version.startswith("0"):
                raise ValueError(f"checksums: {version!r} is not a version number")
            if not _SHA256.fullmatch(digest.lower()):
                raise ValueError(f"checksums: version {version}'s value is not a sha256 (64 hex digits)")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors or ()]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{kind}: {repeated} declared more than once")
        return self

    @model_validator(mode="after")
    def _batch_axis(self) -> Self:
        if self.max_batch_size:
            for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
                for tensor in tensors or ():
                    if not tensor.shape or tensor.shape[0] != -1:
                        raise ValueError(
                            f"{kind} '{tensor.name}': with max_batch_size > 0 the first dimension "
                            "is the batch axis and must be -1"
                        )
            too_big = [s for s in self.batching.preferred_batch_sizes if s > self.max_batch_size]
            if too_big:
                raise ValueError(f"preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        return self

    def declared_signature(self) -> Signature | None:
        """The signature as declared; a side left out is empty (the graph's is used)."""
        if self.inputs is None and self.outputs is None:
            return None
        return Signature(
            tuple(t.spec() for t in self.inputs or ()),
            tuple(t.spec() for t in self.outputs or ()),
        )


def load_config(model_dir: Path) -> ModelConfig:
    """Read ``model_dir/model.toml``; a missing file means all defaults."""
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return ModelConfig()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}{_hint(path)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot be read: {exc}") from None
    for (section, key), instead in MOVED.items():
        table = document.get(section)
        if isinstance(table, dict) and key in table:
            raise ConfigError(
                str(path), f"moved: set it as {instead} (the ONNX runtime's own options)", f"{section}.{key}"
            )
    try:
        return ModelConfig.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(str(path), reason(first) + _misplaced(first), field_path(first["loc"])) from None


def field_path(location: tuple[int | str, ...]) -> str | None:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or None


def reason(error: object) -> str:
    assert isinstance(error, dict)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        return "unknown field"
    return message


def _misplaced(error: Any) -> str:
    """A top-level key written at the end of the file lands in the table above it."""
    location = error.get("loc", ())
    if error.get("type") == "extra_forbidden" and len(location) > 1 and location[-1] in ModelConfig.model_fields:
        where = "write it above the first [table] (a key belongs to the table above it)"
        return f"; {location[-1]} is a top-level key: {where}"
    return ""


def _hint(path: Path) -> str:
    """The one TOML mistake the runtime table invites: ``runtime = "onnx"`` beside ``[runtime.options]``."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*runtime\s*=", text, re.M) and re.search(r"^\s*\[runtime\.", text, re.M):
            return '; with [runtime.options], name the runtime in its table: [runtime] name = "onnx" (or runtime.name)'
    return ""
