"""The MLflow Model Registry as a source of models: each registered model is
served by one of its aliases (``models:/fraud@champion``). When the alias
moves to another version, that version's artifact is pulled into the model
repository as a version directory (the ONNX flavour as it is; a scikit-learn
model saved with skops converted to ONNX on the way) and deployed through the
registry's ordinary path: load, verify, warm up, then made the default (a
pin). A version that fails anywhere on that path leaves the serving one in
place.

mlflow is an optional extra (``pip install 'turnout[mlflow]'``); it is
imported only here, and only when the server is started with
``--registry mlflow``. Pickled models are refused, as everywhere in turnout.
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

log = logging.getLogger("turnout.mlflow")

MODEL_TOML = """\
# Pulled from the MLflow Model Registry by turnout (--registry mlflow): each
# version directory is a registered model version; the alias picks the default.
[version_policy]
all = true
"""
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
        """The version's directory in the repository, pulled (and converted) if not there yet."""
        model_dir = self._repository / reference.model
        target = model_dir / str(version)
        if (target / "model.onnx").is_file():
            return target
        model_dir.mkdir(parents=True, exist_ok=True)
        if not (model_dir / "model.toml").exists():
            (model_dir / "model.toml").write_text(MODEL_TOML)
        staging = model_dir / f".pull-{version}"  # hidden: never read as a version while incomplete
        shutil.rmtree(staging, ignore_errors=True)
        try:
            downloaded = Path(
                self._mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{reference.model}/{version}", dst_path=str(staging / "download")
                )
            )
            _to_onnx(downloaded, staging / "model")
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


def _to_onnx(downloaded: Path, out: Path) -> None:
    """The artifact as a turnout version directory: model.onnx (and any external data beside it)."""
    import yaml  # mlflow's own dependency

    flavors = yaml.safe_load((downloaded / "MLmodel").read_text())["flavors"]
    out.mkdir(parents=True)
    if "onnx" in flavors:
        source = downloaded / flavors["onnx"].get("data", "model.onnx")
        for item in downloaded.iterdir():  # weights stored as external data sit beside model.onnx
            if item.is_file() and item.name not in ("MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt"):
                shutil.copy(item, out / ("model.onnx" if item == source else item.name))
        return
    if "sklearn" in flavors:
        sklearn = flavors["sklearn"]
        if sklearn.get("serialization_format") != "skops":
            raise MlflowUnavailable(
                "the scikit-learn model is a pickle, which runs code when loaded: log it with "
                "serialization_format='skops' (or as ONNX) and register that version"
            )
        (out / "model.onnx").write_bytes(_skops_to_onnx(downloaded / sklearn["pickled_model"]))
        return
    raise MlflowUnavailable(f"no flavour turnout serves in {sorted(flavors)}: log the model as ONNX or sklearn (skops)")


def _skops_to_onnx(path: Path) -> bytes:
    import numpy as np
    import skops.io as sio
    from skl2onnx import to_onnx

    untrusted = sio.get_untrusted_types(file=str(path))
    if untrusted:
        raise MlflowUnavailable(f"{path.name} holds types skops does not trust: {untrusted}; refused")
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
