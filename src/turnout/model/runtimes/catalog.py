"""Finding a model's runtime by the name ``model.toml`` gives it.

Three places, in order: the runtimes turnout ships (``onnx``, ``python``, ``sklearn``,
``xgboost``, ``lightgbm``, ``pytorch``); the
``turnout.runtimes`` entry point group, so an installed package adds a runtime
without touching turnout (``[project.entry-points."turnout.runtimes"]
myruntime = "mypkg.runtime:MyRuntime"``); and ``package.module:Class``
written in ``model.toml`` itself (a runtime, or a ``PythonModel`` subclass,
which the Python runtime serves). The last imports and runs that module, so
it is allowed only for a model marked ``trusted = true`` on a server started
with ``--allow-trusted-models``, as a pickle is. An entry point is code the
operator installed, so it needs neither.

Each runtime is built once (its class called without arguments) and shared by
every model that names it.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

from turnout.model.runtimes.base import ModelRuntime

ENTRY_POINTS = "turnout.runtimes"
_CLASS_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class RuntimeNotFound(LookupError):
    """The message says which runtimes there are, or why this one may not load."""


def _onnx() -> ModelRuntime:
    from turnout.model.runtimes.onnx import OnnxRuntime

    return OnnxRuntime()


def _python() -> ModelRuntime:
    from turnout.model.runtimes.python_runtime import PythonRuntime

    return PythonRuntime()


def _sklearn() -> ModelRuntime:
    from turnout.model.runtimes.sklearn import SklearnRuntime

    return SklearnRuntime()


def _xgboost() -> ModelRuntime:
    from turnout.model.runtimes.boosters import XGBoostRuntime

    return XGBoostRuntime()


def _lightgbm() -> ModelRuntime:
    from turnout.model.runtimes.boosters import LightGBMRuntime

    return LightGBMRuntime()


def _pytorch() -> ModelRuntime:
    from turnout.model.runtimes.pytorch import TorchRuntime

    return TorchRuntime()


#: the file each built-in runtime reads, so a version whose runtime's file is
#: missing can name the runtime that reads the file it has instead
RUNTIME_OF_FILE: Mapping[str, str] = {
    "model.onnx": "onnx",
    "model.py": "python",
    "model.skops": "sklearn",
    "model.json": "xgboost",
    "model.ubj": "xgboost",
    "model.txt": "lightgbm",
    "model.pt2": "pytorch",
    "model.pt": "pytorch",
    "pipeline.toml": "pipeline",
    "remote.toml": "remote",
}

BUILT_IN: Mapping[str, Callable[[], ModelRuntime]] = {
    "onnx": _onnx,
    "python": _python,
    "sklearn": _sklearn,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
    "pytorch": _pytorch,
}


#: runtimes the server adds itself (app/server.py), since they reach its other models
SERVER_ONLY: Mapping[str, str] = {
    "pipeline": "runs only inside `turnout serve` and `turnout models validate` (its steps call other models)",
}


class RuntimeCatalog:
    def __init__(
        self,
        built_in: Mapping[str, Callable[[], ModelRuntime]] = BUILT_IN,
        allow_trusted_models: bool = False,
    ) -> None:
        self._factories = dict(built_in)
        self._allow_trusted = allow_trusted_models
        self._built: dict[str, ModelRuntime] = {}
        self._lock = threading.Lock()  # models are read from worker threads

    def names(self) -> list[str]:
        """The runtimes a model may name without a class path."""
        installed = {entry.name for entry in entry_points(group=ENTRY_POINTS)}
        return sorted(set(self._factories) | installed)

    def find(self, name: str, trusted: bool = False) -> ModelRuntime:
        """The runtime ``name`` refers to; ``RuntimeNotFound`` says why not."""
        with self._lock:
            runtime = self._built.get(name)
            if runtime is None:
                runtime = self._built[name] = self._build(name, trusted)
            elif _CLASS_PATH.fullmatch(name):
                self._check_trusted(name, trusted)
            return runtime

    def _build(self, name: str, trusted: bool) -> ModelRuntime:
        factory = self._factories.get(name)
        if factory is None and name in SERVER_ONLY:
            raise RuntimeNotFound(f"runtime {name!r} {SERVER_ONLY[name]}")
        if factory is None and _CLASS_PATH.fullmatch(name):
            self._check_trusted(name, trusted)
            factory = _imported(name)
        if factory is None:
            found = [entry for entry in entry_points(group=ENTRY_POINTS) if entry.name == name]
            if not found:
                raise RuntimeNotFound(
                    f"unknown runtime {name!r}; one of {self.names()}, or 'package.module:Class' for a trusted model"
                )
            try:
                factory = found[0].load()
            except Exception as exc:
                raise RuntimeNotFound(f"runtime {name!r} ({found[0].value}) cannot be imported: {exc}") from None
        try:
            runtime = factory()
        except Exception as exc:
            raise RuntimeNotFound(f"runtime {name!r} cannot be set up: {exc}") from None
        if not isinstance(runtime, ModelRuntime):
            raise RuntimeNotFound(f"runtime {name!r} is a {type(runtime).__name__}, not a turnout ModelRuntime")
        return runtime

    def _check_trusted(self, name: str, trusted: bool) -> None:
        if not (trusted and self._allow_trusted):
            needs = [] if trusted else ["`trusted = true` in its model.toml"]
            if not self._allow_trusted:
                needs.append("a server run with --allow-trusted-models")
            raise RuntimeNotFound(
                f"runtime {name!r} imports and runs code from that module: refused without {' and '.join(needs)}"
            )


def _imported(path: str) -> Callable[[], ModelRuntime]:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise RuntimeNotFound(f"runtime {path!r}: module {module_name!r} cannot be imported: {exc}") from None
    found = getattr(module, attribute, None)
    if not callable(found):
        raise RuntimeNotFound(f"runtime {path!r}: {module_name} has no class {attribute!r}")
    from turnout.model.runtimes.python import PythonModel
    from turnout.model.runtimes.python_runtime import NamedClassRuntime

    if isinstance(found, type) and issubclass(found, PythonModel):  # a model, served by the Python runtime
        model_class = found
        return lambda: NamedClassRuntime(model_class)
    factory: Callable[[], ModelRuntime] = found
    return factory
