"""An optimised version written beside its source: the transformations run in
a scratch directory inside the model's directory, the report is made, and
only a version that passes ``min_agreement`` is moved into place, in one
rename, so a server watching the repository never sees half a version. The
source version's directory is only read.

Order: pruning, then int8 or fp16, then graph fusion (quantizing a graph
already fused at the ``all`` level would meet operators only ONNX Runtime
knows). The new version directory gets ``model.onnx``, the source version's
other files (a drift ``profile.json``: the inputs are the same) except
checksum files, and ``optimize.json``, the report.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from turnout.model.repository import ModelRepository
from turnout.model.signature import Signature
from turnout.optimize import OptimizeError, pruning, transforms
from turnout.optimize.report import Report, compare, run_all, session
from turnout.optimize.samples import Samples

ARTIFACT = "model.onnx"
REPORT = "optimize.json"


@dataclass(frozen=True)
class Plan:
    prune: float | None = None  # the share of each hidden layer's units removed
    int8: str | None = None  # "dynamic" or "static"
    fp16: bool = False
    keep_io_types: bool = True
    graph: str | None = None  # an ONNX Runtime optimisation level, saved offline

    def steps(self) -> list[str]:
        named = []
        if self.prune is not None:
            named.append(f"pruned {self.prune:.0%} of hidden units")
        if self.int8 is not None:
            named.append(f"int8 {self.int8}")
        if self.fp16:
            named.append("fp16" + (" (inputs and outputs kept)" if self.keep_io_types else ""))
        if self.graph is not None:
            named.append(f"graph optimised ({self.graph})")
        return named

    def check(self) -> None:
        if not self.steps():
            raise OptimizeError("nothing to do: ask for --prune, --int8, --fp16 or --graph")
        if self.int8 is not None and self.fp16:
            raise OptimizeError("--int8 and --fp16 are one or the other")
        if self.prune is not None and not 0.0 < self.prune < 1.0:
            raise OptimizeError("--prune is the share of hidden units removed, between 0 and 1 (e.g. 0.5)")


@dataclass(frozen=True)
class Source:
    """The model version an optimisation starts from."""

    model: str
    version: int
    directory: Path  # the model's
    signature: Signature
    next_version: int
    declared: bool = False  # model.toml declares the signature (its datatypes then bind every version)

    @property
    def artifact(self) -> Path:
        return self.directory / str(self.version) / ARTIFACT


def source_of(repository: Path, model: str, version: int) -> Source:
    from turnout.model.runtimes.onnx import session_signature

    found = ModelRepository(repository).read(model)
    if found.runtime.platform != "onnxruntime_onnx":
        raise OptimizeError(f"model '{model}' runs on {found.runtime.platform}; turnout optimize works on ONNX models")
    if version not in found.on_disk:
        raise OptimizeError(f"model '{model}' has no version {version} (on disk: {list(found.on_disk)})")
    artifact = found.version_dir(version) / ARTIFACT
    made, _ = session(artifact)
    declared = found.config.inputs is not None or found.config.outputs is not None
    return Source(model, version, found.directory, session_signature(made), max(found.on_disk) + 1, declared)


def optimize(source: Source, target: int | None, plan: Plan, validation: Samples, calibration: Samples | None,
             min_agreement: float | None) -> Report:  # fmt: skip
    """Make the version, report on it, and move it into place unless refused."""
    plan.check()
    if target is not None and target < 1:
        raise OptimizeError(f"--to {target}: versions are numbered from 1")
    version = source.next_version if target is None else target
    destination = source.directory / str(version)
    if destination.exists():
        raise OptimizeError(f"{destination} exists: name a new version with --to")
    if plan.fp16 and not plan.keep_io_types and source.declared:
        raise OptimizeError(f"{source.model}'s model.toml declares its inputs and outputs, with their datatypes for "
                            "every version: fp16 inputs and outputs would not load (leave out --fp16-io)")  # fmt: skip
    if plan.int8 == "static" and calibration is None:
        raise OptimizeError("--int8 static calibrates on representative inputs: give --calibration FILE")
    report = Report(source.model, source.version, version, plan.steps(), len(validation))
    scratch = Path(tempfile.mkdtemp(prefix=".optimize-", dir=source.directory))  # a name no version can have
    try:
        current = source.artifact
        if plan.prune is not None:
            current = _pruned(current, scratch / "pruned.onnx", plan.prune, calibration or validation, report)
        if plan.int8 == "dynamic":
            current = _step(transforms.int8_dynamic, current, scratch / "int8.onnx")
        elif plan.int8 == "static":
            assert calibration is not None
            current = _step(lambda a, b: transforms.int8_static(a, b, calibration), current, scratch / "int8.onnx")
        if plan.fp16:
            current = _step(lambda a, b: transforms.fp16(a, b, plan.keep_io_types), current, scratch / "fp16.onnx")
        if plan.graph is not None:
            current = _step(lambda a, b: transforms.fuse(a, b, plan.graph or "all"), current, scratch / "fused.onnx")
        try:
            compare(report, source.artifact, current, validation)
        except Exception as exc:  # the new file does not load or run (an operator ONNX Runtime lacks, say)
            raise OptimizeError(f"the optimised model could not be run beside the source: {exc}") from exc
        if min_agreement is not None and report.agreement < min_agreement:
            report.refused = f"agreement {report.agreement:.4f} is below --min-agreement {min_agreement}"
            return report
        staged = scratch / "version"
        staged.mkdir()
        for path in (source.directory / str(source.version)).iterdir():
            if path.is_file() and path.name != ARTIFACT and not path.name.endswith(".sha256") and path.name != REPORT:
                shutil.copy2(path, staged / path.name)
        shutil.copyfile(current, staged / ARTIFACT)
        report.written = True
        (staged / REPORT).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        staged.rename(destination)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _step(transform: Callable[[Path, Path], None], source: Path, target: Path) -> Path:
    try:
        transform(source, target)
    except OptimizeError:
        raise
    except Exception as exc:  # ONNX Runtime's tools raise anything: the user gets what went wrong, not a trace
        raise OptimizeError(f"{target.stem} failed on {source.name}: {exc}") from exc
    return target


def _pruned(source: Path, target: Path, ratio: float, samples: Samples, report: Report) -> Path:
    """Each hidden layer in turn, measured on ``samples`` as the layers before it left the model."""
    import onnx

    model = onnx.load(str(source))
    layers = [layer.activation for layer in pruning.hidden_layers(model)]
    if not layers:
        raise OptimizeError("nothing to prune: no fully connected hidden layer (dense, elementwise activation, dense)")
    probe_file = target.with_name("probe.onnx")
    for name in layers:
        probe, _ = pruning.with_activations(model)
        onnx.save(probe, str(probe_file))
        made, _ = session(probe_file)
        seen = np.asarray(run_all(made, [name], samples)[name])
        model, change = pruning.prune_layer(model, name, ratio, seen.reshape(len(seen), -1))
        if change is not None:
            report.notes.append(f"hidden layer '{change[0]}': {change[1]} -> {change[2]} units")
    onnx.save(model, str(target))
    return target
