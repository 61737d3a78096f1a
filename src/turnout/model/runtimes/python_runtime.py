"""The ``python`` runtime: serves a :class:`~turnout.model.runtimes.python.PythonModel`
(see ``python.py`` for what a model is), each instance in a worker process
of its own (``process.py``; ``isolation = "process"``, the default) or in
the server's own process (``isolation = "none"``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from turnout.model.runtimes.base import LoadContext, LoadedModel, ModelRuntime
from turnout.model.runtimes.process import ProcessInstance
from turnout.model.runtimes.python import MODEL_FILE, ModelContext, PythonLoaded, PythonModel, model_class_in
from turnout.model.runtimes.worker import LoadSpec


class PythonOptions(BaseModel):
    """``[runtime.options]`` of a Python model: ``class`` picks the class in
    ``model.py`` (needed only when it defines several); every other key is the
    model's own, handed to ``load`` as ``context.options``."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    model_class: str | None = Field(default=None, alias="class", min_length=1)
    #: "process": each instance in a worker process of its own; "none": in the server's process
    isolation: Literal["process", "none"] = "process"

    def model_options(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


class PythonRuntime(ModelRuntime):
    platform = "python"
    artifacts: ClassVar[tuple[str, ...]] = (MODEL_FILE,)
    executes_code_on_load = True
    options = PythonOptions

    def __init__(self, model_class: type[PythonModel] | None = None) -> None:
        self._class = model_class  # a class named in model.toml (then see NamedClassRuntime)

    def code_on_load(self, version_dir: Path) -> str | None:
        return f"{MODEL_FILE} is Python code" if self._class is None else f"{self._class.__module__} is Python code"

    def load(self, context: LoadContext) -> LoadedModel:
        options: PythonOptions = context.options or PythonOptions()
        name = context.version_dir.parent.name
        if options.isolation == "process":
            path = None if self._class is None else f"{self._class.__module__}:{self._class.__qualname__}"
            spec = LoadSpec(context.version_dir, name, options.model_options(), context.instance,
                            options.model_class, path)  # fmt: skip
            timeout = context.config.batching.timeout_ms
            return ProcessInstance(spec, context.version_dir.name, None if timeout is None else timeout / 1000)
        cls = self._class or model_class_in(context.version_dir / MODEL_FILE, options.model_class, context.instance)
        model = cls()
        model.load(ModelContext(context.version_dir, options.model_options(), context.instance, name))
        return PythonLoaded(model)


class NamedClassRuntime(PythonRuntime):
    """``runtime = "package.module:Class"`` naming a :class:`PythonModel`: no ``model.py``."""

    artifacts = ()

    def __init__(self, model_class: type[PythonModel]) -> None:
        super().__init__(model_class)
