"""The schema of ``pipeline.toml``: a pipeline version's inputs, steps and outputs.

Tensors are wired by reference: ``"text"`` is the pipeline input ``text``;
``"scale.output"`` is the output ``output`` of the step ``scale``. Whether each
reference resolves, and to what datatype and shape, is checked in ``graph.py``
once the step models are known; this module checks only the file's form.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from turnout.model.config import TensorConfig, field_path, reason

PIPELINE_FILE = "pipeline.toml"
_NAME = r"^[A-Za-z_][A-Za-z0-9_-]*$"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OutputConfig(_Table):
    """A pipeline output: the tensor ``source`` names, returned as ``name``."""

    name: Annotated[str, Field(min_length=1)]
    source: Annotated[str, Field(min_length=1, alias="from")]


class Member(_Table):
    """A model an ensemble or a switch branch calls: a pinned version, or the
    endpoint (with its routing policy) when ``version`` is left out."""

    model: Annotated[str, Field(min_length=1)]
    version: Annotated[int, Field(ge=1)] | None = None
    weight: Annotated[float, Field(gt=0)] = 1.0


class Condition(_Table):
    """When a switch branch is taken: a request parameter equal to a value (the
    whole request goes one way), or a tensor column compared per row (rows
    are split between branches and joined back in order)."""

    parameter: str | None = None
    tensor: str | None = None
    column: Annotated[int, Field(ge=0)] = 0
    equals: str | int | float | bool | None = None
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Condition:
        if (self.parameter is None) == (self.tensor is None):
            raise ValueError("a condition names exactly one of 'parameter' or 'tensor'")
        tests = [t for t in (self.equals, self.above, self.below) if t is not None]
        if not tests:
            raise ValueError("a condition needs 'equals', 'above' or 'below'")
        if self.parameter is not None and (self.above is not None or self.below is not None):
            raise ValueError("a parameter condition compares with 'equals' only")
        return self


class Branch(Member):
    when: Condition | None = None  # None: the default branch, taken when no other is


class _Step(_Table):
    name: Annotated[str, Field(pattern=_NAME)]


class ModelStep(_Step):
    kind: Literal["model"] = "model"
    model: Annotated[str, Field(min_length=1)]
    version: Annotated[int, Field(ge=1)] | None = None
    inputs: dict[str, str]  # the model's input name -> the tensor fed to it


# a Python function in a file of the version directory: "steps.py:normalise"
_FUNCTION = r"^[A-Za-z_][A-Za-z0-9_]*\.py:[A-Za-z_][A-Za-z0-9_]*$"
Combiner = Annotated[str, Field(pattern=r"^(average|weighted|vote|[A-Za-z_][A-Za-z0-9_]*\.py:[A-Za-z_][A-Za-z0-9_]*)$")]


class EnsembleStep(_Step):
    """Several models given the same inputs; each combined output is the
    average, the weighted average (members' ``weight``) or the per-row
    majority vote of the members' outputs of that name, or what a Python
    function (``"combine.py:geometric_mean"``, called with the members'
    arrays and their weights) makes of them."""

    kind: Literal["ensemble"]
    members: Annotated[list[Member], Field(min_length=2)]
    inputs: dict[str, str]
    combine: Annotated[dict[str, Combiner], Field(min_length=1)]


class PythonStep(_Step):
    """Pre- or post-processing in Python: ``function`` (``"steps.py:name"``, a
    file in the version directory) is called with the step's inputs (a dict
    of arrays by their names here) and the request's parameters, and returns
    a dict holding the ``outputs`` declared, of their datatypes and shapes.
    It runs on the event loop, so it must be quick (glue, not a model: a
    model in Python is a ``python`` runtime model, called by a model step).
    Loading runs the file's code, so the pipeline must be trusted."""

    kind: Literal["python"]
    function: Annotated[str, Field(pattern=_FUNCTION)]
    inputs: dict[str, str]
    outputs: Annotated[list[TensorConfig], Field(min_length=1)]


class SwitchStep(_Step):
    """One of several models per request (a parameter) or per row (a tensor).
    The branches must give the same outputs; the last may omit ``when``."""

    kind: Literal["switch"]
    branches: Annotated[list[Branch], Field(min_length=2)]
    inputs: dict[str, str]

    @model_validator(mode="after")
    def _default_last(self) -> SwitchStep:
        defaults = [i for i, branch in enumerate(self.branches) if branch.when is None]
        if len(defaults) > 1 or (defaults and defaults[0] != len(self.branches) - 1):
            raise ValueError("only the last branch may leave out 'when' (it is the default)")
        return self


class ArgmaxStep(_Step):
    """The index of the largest value along the last axis (a class label)."""

    kind: Literal["argmax"]
    input: str
    output: Annotated[str, Field(min_length=1)] = "label"


class RedisStore(_Table):
    """Features in Redis: a hash per entity at ``key`` (``{id}`` replaced by
    the entity id), one field per feature, as a feature store's Redis online
    store can keep them and as simple to write yourself."""

    backend: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    key: str = "{id}"
    timeout_ms: Annotated[float, Field(gt=0)] = 1000.0

    @field_validator("key")
    @classmethod
    def _has_id(cls, value: str) -> str:
        if "{id}" not in value:
            raise ValueError("the key must hold '{id}', where the entity id goes")
        return value


class FeastStore(_Table):
    """Features from Feast's feature server (``feast serve``): each feature
    named ``"view:feature"``, the entity id sent as the entity's ``join_key``,
    an integer when ``entity_type`` is ``"int64"`` (as the Feast entity is
    declared)."""

    backend: Literal["feast"]
    url: str = "http://127.0.0.1:6566"
    join_key: Annotated[str, Field(min_length=1)]
    entity_type: Literal["string", "int64"] = "string"
    timeout_ms: Annotated[float, Field(gt=0)] = 1000.0

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("Feast's feature server is reached at an http:// or https:// URL")
        return value.rstrip("/")


StoreConfig = Annotated[RedisStore | FeastStore, Field(discriminator="backend")]


class FeaturesStep(_Step):
    """Features read from an online store for each row's entity id, as one
    FP32 tensor [rows, len(features)]. A missing entity (or feature) is
    refused with a 400 naming it, or takes ``defaults`` when given."""

    kind: Literal["features"]
    entity: str
    store: StoreConfig
    features: Annotated[list[str], Field(min_length=1)]
    output: Annotated[str, Field(min_length=1)] = "features"
    defaults: list[float] | None = None

    @model_validator(mode="after")
    def _defaults_fit(self) -> FeaturesStep:
        if self.defaults is not None and len(self.defaults) != len(self.features):
            raise ValueError(f"defaults has {len(self.defaults)} values for {len(self.features)} features")
        if isinstance(self.store, FeastStore):
            unqualified = [name for name in self.features if name.count(":") != 1]
            if unqualified:
                raise ValueError(f"Feast features are named 'view:feature'; not {unqualified[:3]}")
        return self


class TokenizeStep(_Step):
    """Text (BYTES, one string per row) to token ids with a Hugging Face
    ``tokenizers`` file in the version directory: outputs ``input_ids``,
    ``attention_mask`` and ``token_type_ids`` (INT64 [rows, tokens]), padded
    to the longest row rounded up to ``pad_to_multiple_of`` (so requests of
    similar length share a batch downstream), cut at ``max_length``."""

    kind: Literal["tokenize"]
    text: str
    tokenizer: str = "tokenizer.json"
    max_length: Annotated[int, Field(ge=1)] = 128
    pad_to_multiple_of: Annotated[int, Field(ge=1)] = 16


Step = Annotated[
    ModelStep | EnsembleStep | SwitchStep | ArgmaxStep | FeaturesStep | TokenizeStep | PythonStep,
    Field(discriminator="kind"),
]


class PipelineDefinition(_Table):
    inputs: Annotated[list[TensorConfig], Field(min_length=1)]
    steps: Annotated[list[Step], Field(min_length=1)]
    outputs: Annotated[list[OutputConfig], Field(min_length=1)]

    @field_validator("inputs")
    @classmethod
    def _plain_names(cls, value: list[TensorConfig]) -> list[TensorConfig]:
        dotted = [t.name for t in value if "." in t.name]
        if dotted:
            raise ValueError(f"input names may not hold '.' (it separates a step from its output): {dotted}")
        return value

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, value: list[Any]) -> list[Any]:
        names = [step.name for step in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"step names must differ: {twice} used twice")
        return value


class DefinitionError(ValueError):
    """``pipeline.toml`` is unreadable or not of the right form; the message says where."""


def _with_default_kind(document: dict[str, Any]) -> dict[str, Any]:
    """A step without ``kind`` calls a model (the common case)."""
    steps = document.get("steps")
    if isinstance(steps, list):
        document = {**document, "steps": [{"kind": "model", **s} if isinstance(s, dict) else s for s in steps]}
    return document


def read_definition(path: Path) -> PipelineDefinition:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{path}: cannot be read: {exc}") from None
    try:
        return PipelineDefinition.model_validate(_with_default_kind(document))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = field_path(tuple(part for part in first["loc"] if part not in _KINDS))
        raise DefinitionError(f"{path}: {where + ': ' if where else ''}{reason(first)}") from None


_KINDS = frozenset({"model", "ensemble", "switch", "argmax", "features", "tokenize", "python"})


def python_files(definition: PipelineDefinition) -> list[str]:
    """The files of the version directory whose code the pipeline runs."""
    files = [s.function.partition(":")[0] for s in definition.steps if isinstance(s, PythonStep)]
    for step in definition.steps:
        if isinstance(step, EnsembleStep):
            files += [how.partition(":")[0] for how in step.combine.values() if ":" in how]
    return sorted(set(files))
