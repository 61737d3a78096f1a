"""The admin side of serving: the repository's index, load and unload, a
model's default versions (pin, unpin, roll back) and its drift reports, and
taking up a model's ``[routing]`` once it is live. Transports' admin routes
call this; inference goes through the data plane."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from turnout.errors import ConfigError, InvalidRequest, NotFound, TurnoutError, Unavailable
from turnout.model.repository import parse_version
from turnout.routing.policy import PolicyError
from turnout.routing.traffic import TrafficControl
from turnout.serving.defaults import DefaultVersions
from turnout.serving.observers import DriftWatch
from turnout.serving.registry import ModelRegistry
from turnout.serving.served import IndexEntry, State, VersionsFailed

log = logging.getLogger("turnout.dataplane")


class ModelAdmin:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        defaults: DefaultVersions,
        drift: DriftWatch,
        traffic: TrafficControl | None = None,
    ) -> None:
        self._registry = registry
        self._defaults = defaults
        self._drift = drift
        self._traffic = traffic

    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        entries = self._registry.index()
        return [e for e in entries if e.state == State.READY] if ready_only else entries

    async def load_model(self, name: str, parameters: object = None) -> None:
        """(Re)load from disk. Triton's load may carry a config override or model
        files; those are refused rather than reported done without being done."""
        if parameters:
            keys = sorted(parameters) if isinstance(parameters, dict) else parameters
            raise InvalidRequest(
                f"load parameters {keys!r} are not supported; change model.toml and the "
                "version directories on disk, then load"
            )
        failed = None
        try:
            await self._registry.load(name)
        except ConfigError as exc:
            raise InvalidRequest(f"model '{name}' cannot be loaded: {exc}") from None
        except VersionsFailed as exc:  # as Triton answers a failed load; the versions that loaded serve
            failed = InvalidRequest(str(exc))
        self.take_up_routing(name)
        if failed is not None:
            raise failed

    def take_up_all_routing(self) -> None:
        """At start, once every model has loaded (a policy may name another model)."""
        for name in sorted({entry.name for entry in self._registry.index()}):
            try:
                self.take_up_routing(name)
            except TurnoutError as exc:  # refused or not saved: logged, and the server starts regardless
                log.error("%s", exc.message)

    def take_up_routing(self, name: str) -> None:
        """Apply the [routing] of ``name``'s model.toml once its versions are
        live; a policy that cannot apply leaves the one in force, and says why."""
        if self._traffic is None:
            return
        self._traffic.model_changed(name)  # other endpoints may route to this model
        try:
            served = self._registry.get(name)
        except TurnoutError:
            return  # nothing live: nothing to route to yet
        try:
            self._traffic.configured(name, served.routing)
        except PolicyError as exc:
            raise InvalidRequest(
                f"model '{name}' loaded, but its [routing] was refused (the policy in force stays): {exc}"
            ) from None

    async def pin_model(self, name: str, version: str) -> None:
        number = parse_version(version)
        if number is None:
            raise InvalidRequest(f"'{version[:40]}' is not a version number")
        with _lifecycle_errors(f"version {number} cannot be pinned, the default stays"):
            await self._defaults.pin(name, number)

    async def unpin_model(self, name: str) -> None:
        with _lifecycle_errors("unpinned, but the reload that followed failed"):
            await self._defaults.unpin(name)

    async def rollback_model(self, name: str) -> int:
        with _lifecycle_errors("cannot roll back, the default stays"):
            version = await self._defaults.rollback(name)
        return version

    def version_status(self, name: str) -> dict[str, Any]:
        """The model's default version, its pin, its earlier defaults and each version's state."""
        if not self._registry.known(name):
            raise NotFound(f"unknown model '{name[:200]}'")
        default, pinned = self._registry.default_version(name), self._defaults.pinned(name)
        return {
            "name": name,
            "default": None if default is None else str(default),
            "pinned": None if pinned is None else str(pinned),
            "history": [str(v) for v in self._defaults.history(name)],
            "versions": [
                {"version": e.version, "state": e.state.value, "reason": e.reason}
                for e in self._registry.index()
                if e.name == name
            ],
        }

    def steps(self, name: str) -> tuple[str, tuple[dict[str, str], ...]]:
        """The default version of a pipeline and its steps (no steps: not a pipeline, or none serves)."""
        default = self._registry.default_version(name)
        if default is None:
            return "", ()
        return str(default), self._registry.get(name, str(default)).steps

    def drift_status(self, name: str) -> dict[str, Any]:
        """Each version's last drift window (for the admin API)."""
        if not self._registry.known(name):
            raise NotFound(f"unknown model '{name[:200]}'")
        versions = []
        for (model, version), (at, report) in sorted(self._drift.reports.items()):
            if model != name:
                continue
            versions.append(
                {
                    "version": version,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                    "rows": report.rows,
                    "features": report.features,
                    "prediction": report.prediction,
                }
            )
        return {"name": name, "versions": versions}

    def drift_view(self, name: str) -> list[dict[str, Any]]:
        """Each version's last window against its profile, share by share (for the dashboard)."""
        views = []
        for (model, version), (_, report) in sorted(self._drift.reports.items()):
            if model != name:
                continue
            try:
                served = self._registry.get(model, version)
            except TurnoutError:
                continue  # no longer served
            if served.drift is None:
                continue
            profile = served.drift.profile
            features = {
                feature: {**report.features[feature], "reference": list(d.shares), "live": report.live_shares[feature]}
                for feature, d in zip(profile.features, profile.inputs, strict=True)
                if feature in report.live_shares
            }
            views.append(
                {
                    "version": version,
                    "rows": report.rows,
                    "features": features,
                    "alert_psi": served.config.drift.alert_psi,
                }
            )
        return views

    async def unload_model(self, name: str) -> None:
        await self._registry.unload(name)
        if self._traffic is not None:
            self._traffic.model_changed(name)


@contextlib.contextmanager
def _lifecycle_errors(what: str) -> Iterator[None]:
    """A pin, unpin or rollback's failures as client-facing errors (never a 500)."""
    try:
        yield
    except VersionsFailed as exc:
        raise InvalidRequest(f"{what}: {exc}") from None
    except ConfigError as exc:
        raise InvalidRequest(f"{what}: the model cannot be read: {exc}") from None
    except OSError as exc:
        raise Unavailable(f"{what}: the pin could not be saved: {exc}") from None
