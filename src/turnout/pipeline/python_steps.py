"""Python in a pipeline: a step (``kind = "python"``) or an ensemble's
combiner, each a function in a file of the version directory.

The file is imported once per load, under a module name of its own (the
pipeline, version and file), so two versions' ``steps.py`` never share a
module. Its outputs are checked against what the step declares, so a
function returning the wrong datatype fails its request, named, instead of
the model after it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from turnout.errors import InferenceFailed
from turnout.model.tensors import Outputs
from turnout.pipeline.definition import PythonStep
from turnout.pipeline.graph import GraphError
from turnout.pipeline.node import Accepts, Wiring
from turnout.protocol.datatypes import DATATYPES, to_numpy
from turnout.protocol.shapes import format_shape, matches

ANY = Accepts(frozenset(DATATYPES), None)


def load_function(version_dir: Path, reference: str, step: str) -> Callable[..., Any]:
    """``"steps.py:name"`` from ``version_dir``; a ``GraphError`` naming the step if it cannot be had."""
    filename, _, attribute = reference.partition(":")
    path = version_dir / filename
    if not path.is_file():
        raise GraphError(f"step '{step}': {filename} is not in the version directory")
    module_name = f"turnout_pipeline_{version_dir.parent.name}_{version_dir.name}_{path.stem}".replace("-", "_")
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(path):
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise GraphError(f"step '{step}': {filename} cannot be imported: {exc!r}") from None
        sys.modules[module_name] = module
    function = getattr(module, attribute, None)
    if not callable(function):
        raise GraphError(f"step '{step}': {filename} has no function '{attribute}'")
    return function  # type: ignore[no-any-return]


class PythonNode:
    kind = "python"
    calls: tuple[str, ...] = ()

    def __init__(self, step: PythonStep, version_dir: Path) -> None:
        self.name = step.name
        self._function = load_function(version_dir, step.function, step.name)
        self._outputs = {t.name: t.spec() for t in step.outputs}
        self._dtypes = {name: to_numpy(spec.datatype) for name, spec in self._outputs.items()}
        self.wiring = Wiring(dict(step.inputs), dict.fromkeys(step.inputs, ANY), self._outputs)

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        answer = self._function(dict(feed), dict(parameters))
        if not isinstance(answer, Mapping):
            raise InferenceFailed(f"returned {type(answer).__name__}, not a dict of arrays")
        outputs: Outputs = {}
        for name in wanted:
            spec = self._outputs[name]
            value = answer.get(name)
            if value is None:
                raise InferenceFailed(f"returned no '{name}'")
            array = np.asarray(value)
            if array.dtype != self._dtypes[name] or not matches(array.shape, spec.shape):
                raise InferenceFailed(f"'{name}' is {array.dtype} {format_shape(array.shape)}, declared "
                                      f"{spec.datatype} {format_shape(spec.shape)}")  # fmt: skip
            outputs[name] = array
        return outputs
