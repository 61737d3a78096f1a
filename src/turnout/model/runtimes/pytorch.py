"""PyTorch models: ``runtime = "pytorch"`` (the ``torch`` extra).

Two formats, one per version directory:

- ``model.pt2``, a ``torch.export`` program (``torch.export.save``): an ATen
  graph and its weights. Its signature comes from the program: inputs named
  as ``forward``'s arguments, outputs ``output`` (or ``output_0``, ``output_1``
  ... for several; ``[runtime.options] outputs = [...]`` names them),
  datatypes and shapes as exported (a dynamic dimension is ``-1``).
  ``torch.export.load`` itself unpickles parts of an archive, so the archive
  is checked first (``torch_archive``) and its graph's operators after: an
  archive with pickled payloads or native code, or a graph calling an
  operator outside ATen's compute (``aten::from_file`` reads files), loads
  only when trusted.
- ``model.pt``, a TorchScript module (``torch.jit.save``). Loading one runs
  TorchScript from the file (a module's ``__setstate__``, which can read and
  write files: ``tests/model/test_pytorch_runtime.py`` shows it), so it
  loads only when trusted. TorchScript records no shapes: ``model.toml``
  declares ``[[inputs]]`` and ``[[outputs]]``, passed and read in order.

``device`` chooses where it runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
``"mps"``); one this machine lacks falls back to the CPU with a log line.
Tensors arrive as numpy arrays and are shared with torch, not copied, on the
CPU.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from turnout.model.runtimes.base import NO_PARAMETERS, LoadContext, LoadedModel, ModelRuntime, Outputs, Tensors
from turnout.model.runtimes.torch_archive import code_in_archive, sample_inputs
from turnout.model.signature import Signature, TensorSpec

log = logging.getLogger("turnout.registry")

EXPORTED = "model.pt2"
SCRIPTED = "model.pt"

#: torch dtypes by name, as V2 datatypes (bfloat16 has no numpy dtype: not served)
_DATATYPES = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
    "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL",
}  # fmt: skip
#: operator namespaces whose operators compute on tensors and touch nothing else
_COMPUTE_NAMESPACES = frozenset({"aten", "prims", "quantized", "_quantized", "rngprims", "mkldnn", "mkl", "onednn"})
#: ATen operators that do more than compute
_NOT_COMPUTE = frozenset({"aten::from_file", "aten::_print"})


class TorchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: "cpu", "cuda", "cuda:N", "mps": where the model runs; the CPU if that is not here
    device: str = "cpu"
    #: threads inside one operator (torch's intra-op pool, shared by the whole process); 0: torch's default
    threads: Annotated[int, Field(ge=0)] = 1
    #: names for a torch.export program's outputs, in order (default: output, or output_0, output_1, ...)
    outputs: tuple[str, ...] = ()


class TorchRuntime(ModelRuntime):
    platform = "pytorch"
    artifacts: ClassVar[tuple[str, ...]] = ()  # model.pt2 or model.pt: checked at load
    options = TorchOptions

    def code_on_load(self, version_dir: Path) -> str | None:
        if (version_dir / EXPORTED).is_file():
            found = code_in_archive(version_dir / EXPORTED)
            torch = _torch()
            for name, raw in sample_inputs(version_dir / EXPORTED):
                try:
                    torch.load(io.BytesIO(raw), weights_only=True)
                except Exception:  # torch would retry this one with weights_only=False
                    found.append(f"{name} (sample inputs that only a full unpickler reads)")
            if found:
                return f"{EXPORTED} holds {', '.join(found)}"
            return None
        if (version_dir / SCRIPTED).is_file():
            return f"{SCRIPTED} is a TorchScript module (its __setstate__ and code run in the TorchScript interpreter)"
        return None

    def load(self, context: LoadContext) -> LoadedModel:
        torch = _torch()
        options: TorchOptions = context.options or TorchOptions()
        if options.threads:
            torch.set_num_threads(options.threads)
        device = _device(torch, options.device, context)
        if (context.version_dir / EXPORTED).is_file():
            return _exported(torch, context, options, device)
        if (context.version_dir / SCRIPTED).is_file():
            return _scripted(torch, context, device)
        raise ValueError(
            f"{context.version_dir}: neither {EXPORTED} (torch.export.save) nor {SCRIPTED} (torch.jit.save)"
        )


class TorchModel(LoadedModel):
    """A torch callable over positional tensors, its outputs named in order."""

    def __init__(self, torch: Any, call: Any, signature: Signature, device: Any) -> None:
        self._torch = torch
        self._call = call
        self._signature = signature
        self._device = device
        self._input_names = [spec.name for spec in signature.inputs]
        self._output_names = [spec.name for spec in signature.outputs]

    @property
    def signature(self) -> Signature:
        return self._signature

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        torch = self._torch
        with torch.inference_mode():
            given = [torch.from_numpy(np.asarray(inputs[name])).to(self._device) for name in self._input_names]
            answer = self._call(*given)
        produced = _named(answer, self._output_names)
        return {name: produced[name].detach().cpu().numpy() for name in outputs}


def _exported(torch: Any, context: LoadContext, options: TorchOptions, device: Any) -> TorchModel:
    program = torch.export.load(str(context.version_dir / EXPORTED))
    if not context.config.trusted:
        outside = sorted(_non_compute_operators(program))
        if outside:
            raise ValueError(
                f"{EXPORTED} calls {outside}, which do more than compute on tensors: refused unless trusted"
            )
    specs = program.graph_signature.input_specs
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    user_inputs = [spec.arg.name for spec in specs if spec.kind.name == "USER_INPUT"]
    inputs = tuple(_spec(name, placeholders[name].meta.get("val")) for name in user_inputs)
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    produced = [output_node.args[0][i] for i, spec in enumerate(program.graph_signature.output_specs)
                if spec.kind.name == "USER_OUTPUT"]  # fmt: skip
    names = list(options.outputs) or (
        ["output"] if len(produced) == 1 else [f"output_{i}" for i in range(len(produced))]
    )
    if len(names) != len(produced):
        raise ValueError(f"[runtime.options] outputs names {len(names)} outputs; the program returns {len(produced)}")
    outputs = tuple(_spec(name, node.meta.get("val")) for name, node in zip(names, produced, strict=True))
    module = program.module().to(device)
    return TorchModel(torch, module, Signature(inputs, outputs), device)


def _scripted(torch: Any, context: LoadContext, device: Any) -> TorchModel:
    declared = context.config.declared_signature()
    if declared is None or not declared.inputs or not declared.outputs:
        raise ValueError(
            f"{SCRIPTED} is TorchScript, which records no tensor shapes: declare [[inputs]] and [[outputs]] "
            "in model.toml (passed to forward, and read from what it returns, in that order)"
        )
    with warnings.catch_warnings():  # PyTorch deprecates TorchScript for torch.export; the README says so
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(context.version_dir / SCRIPTED), map_location=device)
    module.eval()
    return TorchModel(torch, module, declared, device)


def _named(answer: Any, names: Sequence[str]) -> dict[str, Any]:
    """forward's answer (a tensor, a tuple or list of them, or a dict by name) by output name."""
    if isinstance(answer, Mapping):
        missing = [name for name in names if name not in answer]
        if missing:
            raise ValueError(f"the model returned {sorted(answer)}, without output(s) {missing}")
        return dict(answer)
    answers = [answer] if not isinstance(answer, (tuple, list)) else list(answer)
    if len(answers) != len(names):
        raise ValueError(f"the model returned {len(answers)} tensor(s) for {len(names)} output(s) {list(names)}")
    return dict(zip(names, answers, strict=True))


def _spec(name: str, value: Any) -> TensorSpec:
    if value is None or not hasattr(value, "dtype"):
        raise ValueError(f"{EXPORTED}: {name} is not a tensor (turnout serves tensors in and out)")
    datatype = _DATATYPES.get(str(value.dtype).removeprefix("torch."))
    if datatype is None:
        raise ValueError(f"{EXPORTED}: {name} is {value.dtype}, which the V2 protocol has no datatype for here")
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in value.shape)  # a symbolic size is dynamic
    return TensorSpec(name, datatype, shape)


def _non_compute_operators(program: Any) -> set[str]:
    torch = _torch()
    found: set[str] = set()
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if graph is not None else ():
            if node.op != "call_function":
                continue
            target = node.target
            if isinstance(target, torch._ops.OpOverload):
                name = target.name()  # "aten::linear"
                if name.split("::")[0] not in _COMPUTE_NAMESPACES or name.split(".")[0] in _NOT_COMPUTE:
                    found.add(name)
            elif not isinstance(target, torch._ops.HigherOrderOperator) and target.__module__ != "_operator":
                # a HigherOrderOperator is control flow over subgraphs (checked as modules); _operator: getitem
                found.add(getattr(target, "__qualname__", repr(target)))
    return found


def _device(torch: Any, wanted: str, context: LoadContext) -> Any:
    kind, _, index = wanted.partition(":")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
    }
    if kind not in available:
        raise ValueError(f"[runtime.options] device {wanted!r}: one of 'cpu', 'cuda', 'cuda:N', 'mps'")
    if not available[kind]:
        log.warning("%s: device %r is not available here; running on the CPU", context.version_dir, wanted)
        return torch.device("cpu")
    if kind == "cuda" and not index:  # one instance per GPU, in turn
        return torch.device("cuda", context.instance % torch.cuda.device_count())
    return torch.device(wanted)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeError("the pytorch runtime needs torch: pip install 'turnout[torch]' (the CPU build)") from None
    # requests arrive in read-only buffers; torch.from_numpy shares them and warns, but inference never writes them
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    return torch
