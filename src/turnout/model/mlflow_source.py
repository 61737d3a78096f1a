"""The MLflow Model Registry as a source of models: each registered model is
served by one of its aliases (``models:/fraud@champion``). When the alias
moves to another version, that version's artifact is pulled into the model
repository as a version directory and deployed through the
registry's ordinary path: load, verify, warm up, then made the default (a
pin). A version that fails anywhere on that path leaves the serving one in
place.

The model's ``model.toml`` (written on the first pull, from that version's
flavour, unless the operator wrote one first) names the runtime, and each
version is pulled as that runtime reads it: the ONNX flavour as it is; a
scikit-learn model saved with skops converted to ONNX (``onnx``) or copied
as it is (``sklearn``, its types trusted in ``model.toml``); an XGBoost
booster (json, ubj) and a LightGBM booster in their own formats; a model
that is only a pyfunc as a Python model (``python``: ``mlflow_model/`` and a
``model.py`` serving it, ``mlflow_pyfunc.py``), which loads only once
``model.toml`` says ``trusted = true``, as any Python model.

mlflow is an optional extra (``pip install 'turnout[mlflow]'``); it is
imported only here, and only when the server is started with
``--registry mlflow``. Pickled models are refused, as everywhere in turnout,
unless trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.files import write_json_atomically
from turnout.model.runtimes.mlflow_pyfunc import MLFLOW_MODEL

log = logging.getLogger("turnout.mlflow")

MODEL_TOML = """\
# Pulled from the MLflow Model Registry by turnout (--registry mlflow): each
# version directory is a registered model version; the alias picks the default.
# The runtime was chosen from the first version's flavour; write this file
# before the first pull to choose another (sklearn, with its trusted_types).
runtime = "{runtime}"

[version_policy]
all = true
"""
# A pyfunc version's model.py: the MLflow model beside it, served by turnout's adapter.
PYFUNC_MODEL_PY = '''"""Written by turnout when it pulled this version from the MLflow registry:
the pyfunc model in mlflow_model/, loaded with mlflow.pyfunc.load_model."""

from turnout.model.runtimes.mlflow_pyfunc import MlflowPyfunc


class Model(MlflowPyfunc):
    pass
'''
KEEP_VERSIONS = 3  # pulled versions kept on disk per model (the serving one and the last before it, at least)


class MlflowUnavailable(Exception):
    """mlflow is not installed, or a reference is malformed; the message says what to do."""


@dataclass(frozen=True, slots=True)
class AliasReference:
    model: str  # the registered model, and the name turnout serves it under
    alias: str

    @classmethod
    def parse(cls, text: str) -> AliasReference:
        body = text.removeprefix("models:/")
        model, at, alias = body.partition("@")
        if not (model and at and alias) or "/" in model:
            raise MlflowUnavailable(f"{text!r} is not an alias reference such as models:/fraud@champion")
        return cls(model, alias)

    def __str__(self) -> str:
        return f"models:/{self.model}@{self.alias}"


def import_mlflow() -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # a progress bar per download, written to the server's stderr between its log records
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow
    except ImportError:
        raise MlflowUnavailable(
            "--registry mlflow needs mlflow: pip install 'turnout[mlflow]' (mlflow-skinny and its database drivers)"
        ) from None
    return mlflow


class MlflowPuller:
    """Blocking MLflow calls (the server runs them in a worker thread)."""

    def __init__(self, tracking_uri: str | None, repository: Path) -> None:
        mlflow = import_mlflow()
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise MlflowUnavailable("--registry mlflow needs a tracking URI: --mlflow-uri or MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self._mlflow = mlflow
        self._client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._repository = repository

    def version_of(self, reference: AliasReference) -> int:
        """The version the alias points at now."""
        return int(self._client.get_model_version_by_alias(reference.model, reference.alias).version)

    def pull(self, reference: AliasReference, version: int) -> Path:
        """The version's directory in the repository, pulled (and converted if need be) if not there yet."""
        model_dir = self._repository / reference.model
        target = model_dir / str(version)
        if target.is_dir():  # moved into place whole, once complete
            return target
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f".pull-{version}"  # hidden: never read as a version while incomplete
        shutil.rmtree(staging, ignore_errors=True)
        try:
            downloaded = Path(
                self._mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{reference.model}/{version}", dst_path=str(staging / "download")
                )
            )
            flavors = _flavors(downloaded)
            runtime = _configured_runtime(model_dir)
            if runtime is None:  # the first version pulled: its flavour picks the runtime, the operator may change it
                runtime = _default_runtime(flavors)
                (model_dir / "model.toml").write_text(MODEL_TOML.format(runtime=runtime))
            _as_version(downloaded, flavors, runtime, staging / "model", model_dir)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging / "model", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # a failed or partial download leaves nothing behind
        return target

    def prune(self, reference: AliasReference, keep: set[int]) -> None:
        """Older pulled versions leave the disk (and so the server), but never one in ``keep``."""
        model_dir = self._repository / reference.model
        pulled = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        for version in pulled[:-KEEP_VERSIONS]:
            if version not in keep:
                shutil.rmtree(model_dir / str(version), ignore_errors=True)


# lightgbm's own classes: what MLflow's lightgbm flavour (saved with skops) is made of
LIGHTGBM_TYPES = [
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "collections.OrderedDict",
]
IGNORED = ("MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt")


def _flavors(downloaded: Path) -> dict[str, Any]:
    import yaml  # mlflow's own dependency

    flavors: dict[str, Any] = yaml.safe_load((downloaded / "MLmodel").read_text())["flavors"]
    return flavors


def _configured_runtime(model_dir: Path) -> str | None:
    """The runtime the model's model.toml names (None: no model.toml yet)."""
    if not (model_dir / "model.toml").exists():
        return None
    from turnout.model.config import load_config

    return load_config(model_dir).runtime.name


def _default_runtime(flavors: dict[str, Any]) -> str:
    """ONNX where there is an ONNX flavour, or a scikit-learn model to convert
    (the fastest; a model whose types skops does not trust is served as it is
    once model.toml names the sklearn runtime and trusts them); the booster's
    own runtime for XGBoost and LightGBM."""
    for flavor in ("onnx", "xgboost", "lightgbm"):
        if flavor in flavors:
            return flavor
    if "sklearn" not in flavors and "python_function" in flavors:
        return "python"  # a pyfunc model is code: served only once model.toml says trusted = true
    return "onnx"


def _as_version(downloaded: Path, flavors: dict[str, Any], runtime: str, out: Path, model_dir: Path) -> None:
    """The artifact as a version directory of ``runtime``: the file it reads, converted where it must be."""
    out.mkdir(parents=True)
    if runtime == "onnx" and "onnx" in flavors:
        source = downloaded / flavors["onnx"].get("data", "model.onnx")
        for item in downloaded.iterdir():  # weights stored as external data sit beside model.onnx
            if item.is_file() and item.name not in IGNORED:
                shutil.copy(item, out / ("model.onnx" if item == source else item.name))
        return
    if runtime in ("onnx", "sklearn") and "sklearn" in flavors:
        sklearn = flavors["sklearn"]
        if sklearn.get("serialization_format") != "skops":
            raise MlflowUnavailable(
                "the scikit-learn model is a pickle, which runs code when loaded: log it with "
                "serialization_format='skops' (or as ONNX) and register that version"
            )
        source = downloaded / sklearn["pickled_model"]
        if runtime == "sklearn":  # served as it is: the sklearn runtime checks its types against model.toml's
            shutil.copy(source, out / "model.skops")
        else:
            (out / "model.onnx").write_bytes(_skops_to_onnx(source, model_dir))
        return
    if runtime == "xgboost" and "xgboost" in flavors:
        xgb = flavors["xgboost"]
        if xgb.get("model_format") not in ("json", "ubj"):
            raise MlflowUnavailable(
                f"the XGBoost model is in the {xgb.get('model_format')!r} format: log it with "
                "model_format='ubj' or 'json' and register that version"
            )
        shutil.copy(downloaded / xgb["data"], out / f"model.{xgb['model_format']}")
        return
    if runtime == "lightgbm" and "lightgbm" in flavors:
        (out / "model.txt").write_text(_lightgbm_text(downloaded / flavors["lightgbm"]["data"], flavors["lightgbm"]))
        return
    if runtime == "python" and "python_function" in flavors:
        shutil.copytree(downloaded, out / MLFLOW_MODEL)
        (out / "model.py").write_text(PYFUNC_MODEL_PY)
        return
    raise MlflowUnavailable(
        f"the {runtime!r} runtime (model.toml) cannot serve this version's flavours {sorted(flavors)}; the "
        "registry serves onnx, sklearn (skops), xgboost (json, ubj), lightgbm, and pyfunc (python, trusted)"
    )


def _lightgbm_text(path: Path, flavor: dict[str, Any]) -> str:
    """LightGBM's own text format, from what MLflow saved: a Booster is saved in
    it already; a scikit-learn-style model (LGBMClassifier) with skops, whose
    booster is taken out of it."""
    if flavor.get("model_class") == "lightgbm.basic.Booster":
        return path.read_text()
    if flavor.get("serialization_format") != "skops":
        raise MlflowUnavailable(f"{path.name} is a pickle, which runs code when loaded: log it with skops")
    import skops.io as sio

    untrusted = [t for t in sio.get_untrusted_types(file=str(path)) if t not in LIGHTGBM_TYPES]
    if untrusted:
        raise MlflowUnavailable(f"{path.name} holds types that are not LightGBM's own: {untrusted}; refused")
    text: str = sio.load(str(path), trusted=LIGHTGBM_TYPES).booster_.model_to_string()
    return text


def _skops_to_onnx(path: Path, model_dir: Path) -> bytes:
    import numpy as np
    import skops.io as sio
    from skl2onnx import to_onnx

    untrusted = sio.get_untrusted_types(file=str(path))
    if untrusted:
        listed = ", ".join(f'"{t}"' for t in untrusted)
        raise MlflowUnavailable(
            f"{path.name} holds types skops does not trust by default: {untrusted}. To serve it as it is, "
            f'write {model_dir / "model.toml"} with runtime.name = "sklearn" and [runtime.options] '
            f"trusted_types = [{listed}] (that is trusting them)"
        )
    estimator = sio.load(str(path), trusted=[])
    sample = np.zeros((1, int(estimator.n_features_in_)), dtype=np.float32)
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    model = to_onnx(estimator, sample, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    graph_input = model.graph.input[0]
    graph_input.name = "input"  # the name turnout's examples use; skl2onnx calls it "X"
    for node in model.graph.node:
        node.input[:] = ["input" if name == "X" else name for name in node.input]
    serialized: bytes = model.SerializeToString()
    return serialized


class AliasWatcher:
    """Follows each alias: pull, deploy (load, then pin) and prune, on the event loop."""

    def __init__(
        self,
        puller: MlflowPuller,
        references: list[AliasReference],
        deploy: Callable[[str, int], Awaitable[None]],
        interval: float,
        state: Path | None = None,
        keep: Callable[[str], set[int]] = lambda model: set(),
    ) -> None:
        self._puller = puller
        self._references = references
        self._deploy = deploy
        self._interval = interval
        self._keep = keep
        # the version each alias pointed at when last deployed: after a restart, an alias that has
        # not moved is not deployed again (an operator's pin or rollback since then stands)
        self._state = state
        self._deployed: dict[str, int] = {}
        if state is not None and state.exists():
            self._deployed = {str(k): int(v) for k, v in json.loads(state.read_text(encoding="utf-8")).items()}
        self._serving: dict[AliasReference, int] = {}
        self._refused: dict[AliasReference, int] = {}  # a version that failed: not retried until the alias moves
        self._task: asyncio.Task[None] | None = None

    async def sync(self) -> None:
        for reference in self._references:
            try:
                version = await asyncio.to_thread(self._puller.version_of, reference)
            except Exception as exc:  # the registry down, the alias missing: the serving version stays
                log.warning("%s: cannot resolve the alias: %s", reference, exc)
                continue
            if version in (self._serving.get(reference), self._refused.get(reference)):
                continue
            if self._deployed.get(str(reference)) == version and reference not in self._serving:
                self._serving[reference] = version  # deployed before a restart: the alias has not moved
                continue
            try:
                await asyncio.to_thread(self._puller.pull, reference, version)
            except MlflowUnavailable as exc:  # a flavour or format turnout refuses: until the alias moves
                log.error("%s -> version %d refused, the serving one stays: %s", reference, version, exc)
                self._refused[reference] = version
                continue
            except Exception as exc:  # the registry or artifact store unreachable for now: next round
                log.warning("%s -> version %d: cannot pull it yet (%s); retrying", reference, version, exc)
                continue
            try:
                await self._deploy(reference.model, version)
            except Exception as exc:
                message = getattr(exc, "message", None) or str(exc)
                log.error("%s -> version %d not deployed, the serving one stays: %s", reference, version, message)
                self._refused[reference] = version
                continue
            log.info("%s -> version %d: serving", reference, version)
            self._serving[reference] = version
            self._refused.pop(reference, None)
            self._remember(reference, version)
            await asyncio.to_thread(self._puller.prune, reference, {version} | self._keep(reference.model))

    def _remember(self, reference: AliasReference, version: int) -> None:
        self._deployed[str(reference)] = version
        if self._state is None:
            return
        try:
            write_json_atomically(self._state, self._deployed)
        except OSError as exc:  # after a restart this version is deployed again: harmless
            log.error("cannot save the deployed MLflow versions to %s: %s", self._state, exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sync()
            except Exception:  # the next round tries again
                log.exception("following the MLflow aliases failed")
