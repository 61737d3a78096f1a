"""Your own Python code as a model: ``runtime = "python"`` with a ``model.py``
in the version directory, or ``runtime = "package.module:Class"`` naming an
installed class. Either way the code runs when the model loads, so it loads
only for a model marked ``trusted = true`` on a server run with
``--allow-trusted-models``.

A model is a :class:`PythonModel` subclass::

    from turnout import PythonModel, Tensor

    class Model(PythonModel):
        inputs = (Tensor("text", "BYTES", [-1]),)
        outputs = (Tensor("length", "INT64", [-1]),)

        def load(self, context):
            ...  # once per instance: context.version_dir, context.options, context.instance

        def predict(self, inputs, parameters):
            return {"length": [len(text) for text in inputs["text"]]}

``predict`` receives a batch: a dict of numpy arrays whose first axis is the
requests' rows joined (``max_batch_size`` > 0), and the request parameters
named in ``parameters``; it returns a mapping of output name to an array (or
anything ``numpy.asarray`` takes) with one row per input row. BYTES inputs
arrive as object arrays of ``bytes``; a BYTES output may hold ``str`` (sent
as UTF-8) or ``bytes``. Numbers are cast to the declared datatype when numpy
can do it without losing their kind (float64 to FP32, say); anything else,
a missing output or a wrong row count fails the batch with a 500 that names
the output. ``preprocess`` and ``postprocess`` run on the same batch just
before and after ``predict``; an ``async def predict_async`` is used instead
of ``predict`` when a model defines it (run on the event loop: it must not
block).

The signature comes from ``model.toml``'s ``[[inputs]]``/``[[outputs]]``
when declared there, else from the class's ``inputs``/``outputs``.

This module is what a model sees and what checks its answers; the runtime
that serves it, in a worker process by default, is ``python_runtime.py``.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from turnout.model.runtimes.base import NO_PARAMETERS, LoadedModel, Outputs, Tensors
from turnout.model.signature import Signature, TensorSpec
from turnout.protocol.datatypes import BYTES, to_numpy

MODEL_FILE = "model.py"


def Tensor(name: str, datatype: str, shape: Iterable[int]) -> TensorSpec:  # noqa: N802 - reads as a type
    """One input or output of a Python model's signature (-1: any size)."""
    return TensorSpec(name, datatype, tuple(shape))


@dataclass(frozen=True, slots=True)
class ModelContext:
    """What a Python model instance is loaded with."""

    version_dir: Path  # its files
    options: Mapping[str, Any]  # [runtime.options] of model.toml, less the runtime's own keys
    instance: int  # which of [instances] count, from 0
    name: str = ""  # the model's name in the repository


class PythonModel:
    """The base class of a Python model (see the module's documentation)."""

    #: the signature, unless ``model.toml`` declares it (``load`` may set them on the instance)
    inputs: ClassVar[Sequence[TensorSpec]] = ()
    outputs: ClassVar[Sequence[TensorSpec]] = ()
    #: the request parameters ``predict`` reads (requests batch together only when these agree)
    parameters: ClassVar[Iterable[str]] = ()

    def load(self, context: ModelContext) -> None:
        """Once per instance, before any request: read weights, build tables."""

    def preprocess(self, inputs: dict[str, np.ndarray[Any, Any]], parameters: Mapping[str, Any]) -> dict[str, Any]:
        return inputs

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]], parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} defines neither predict nor predict_async")

    def postprocess(self, outputs: Mapping[str, Any], parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        return outputs

    def unload(self) -> None:
        """When the version stops serving."""


class PythonLoaded(LoadedModel):
    """A :class:`PythonModel` instance as the batcher runs it, its answers checked."""

    def __init__(self, model: PythonModel) -> None:
        self._model = model
        self._batched = True
        self.parameters = frozenset(type(model).parameters)  # type: ignore[misc]  # per model, not per class
        self.asynchronous = callable(getattr(model, "predict_async", None))  # type: ignore[misc]
        self._specs: dict[str, TensorSpec] = {}

    @property
    def signature(self) -> Signature | None:
        model = self._model  # the class's, or set by load on the instance (read from the artifact, say)
        if not model.inputs or not model.outputs:
            return None
        return Signature(tuple(model.inputs), tuple(model.outputs))

    def serving(self, signature: Signature, max_batch_size: int) -> None:
        self._specs = {spec.name: spec for spec in signature.outputs}
        self._batched = max_batch_size > 0  # else a request's rows are its own business

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        model = self._model
        prepared = model.preprocess(dict(inputs), parameters)
        answer = model.postprocess(model.predict(prepared, parameters), parameters)
        return self._checked(answer, outputs, _rows(inputs))

    async def predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        model = self._model
        prepared = model.preprocess(dict(inputs), parameters)
        answer = model.postprocess(await model.predict_async(prepared, parameters), parameters)  # type: ignore[attr-defined]
        return self._checked(answer, outputs, _rows(inputs))

    def close(self) -> None:
        self._model.unload()

    def _checked(self, answer: Any, names: Sequence[str], rows: int | None) -> Outputs:
        if not isinstance(answer, Mapping):
            raise TypeError(f"predict returned a {type(answer).__name__}, not a mapping of output name to array")
        checked = {}
        for name in names:
            if name not in answer:
                raise ValueError(f"output '{name}' is missing from what predict returned (it has {sorted(answer)})")
            checked[name] = _as_array(name, answer[name], self._specs.get(name), rows if self._batched else None)
        return checked


def _rows(inputs: Tensors) -> int | None:
    first = next(iter(inputs.values()), None)
    return None if first is None or first.ndim == 0 else int(first.shape[0])


def _as_array(name: str, value: Any, spec: TensorSpec | None, rows: int | None) -> np.ndarray[Any, Any]:
    """One output as the protocol carries it, or ``ValueError`` naming the output and what is wrong."""
    if spec is not None and spec.datatype == BYTES:
        array = np.asarray(value, dtype=object)
        encoded = np.empty(array.shape, dtype=object)
        for index, item in np.ndenumerate(array):
            if isinstance(item, str):
                encoded[index] = item.encode()
            elif isinstance(item, (bytes, bytearray, memoryview)):
                encoded[index] = bytes(item)
            else:
                raise ValueError(f"output '{name}' is BYTES but holds a {type(item).__name__} at {list(index)}")
        array = encoded
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"output '{name}' is not an array: {exc}") from None
        if spec is not None:
            wanted = to_numpy(spec.datatype)
            if array.dtype != wanted:
                if not np.can_cast(array.dtype, wanted, casting="same_kind"):
                    raise ValueError(f"output '{name}' is {array.dtype}, which cannot be cast to {spec.datatype}")
                array = array.astype(wanted)
    if spec is not None:
        if array.ndim != len(spec.shape):
            raise ValueError(f"output '{name}' has shape {list(array.shape)}, not {len(spec.shape)} dimensions")
        if any(want >= 0 and got != want for got, want in zip(array.shape, spec.shape, strict=True)):
            shape, declared = list(array.shape), list(spec.shape)
            raise ValueError(f"output '{name}' has shape {shape} where the signature says {declared}")
    if rows is not None and (array.ndim == 0 or array.shape[0] != rows):
        raise ValueError(f"output '{name}' has {array.shape[0] if array.ndim else 0} rows for {rows} input rows")
    return array


def model_class_in(path: Path, named: str | None, instance: int) -> type[PythonModel]:
    module = _import(path, instance)
    if named is not None:
        found = getattr(module, named, None)
        if not (inspect.isclass(found) and issubclass(found, PythonModel)):
            raise ValueError(f"{path.name} has no PythonModel subclass named {named!r}")
        return found
    defined = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, PythonModel) and value.__module__ == module.__name__
    ]
    if len(defined) != 1:
        names = sorted(cls.__name__ for cls in defined)
        raise ValueError(
            f"{path.name} defines {len(defined)} PythonModel subclasses {names}: "
            'exactly one, or name it with [runtime.options] class = "..."'
        )
    return defined[0]


def _import(path: Path, instance: int) -> ModuleType:
    """``model.py`` as a module of its own, once per instance (as each would
    be in a process of its own); a failure says where."""
    name = f"turnout_model_{abs(hash((str(path), instance)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ValueError(f"{path.name} failed to import: {type(exc).__name__}: {exc}") from None
    return module
