"""``remote.toml``: a version that is served by replicas of another V2 server.

A version directory holding ``remote.toml`` (and nothing else it needs) is a
remote endpoint set: every request to that version goes to one of the
replicas it names. So a canary from a local version to a remote one, a
shadow of a remote variant, or a repository of nothing but remote versions
(a gateway) are the policies and repository turnout already has.

Each field is said in the README's "Running several replicas".
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REMOTE_FILE = "remote.toml"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Retries(_Table):
    #: extra attempts (retries and hedges together) as a percent of requests, over ``window_seconds``
    budget_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    window_seconds: Annotated[float, Field(gt=0)] = 10.0
    #: a quiet set may still retry this often
    min_per_second: Annotated[float, Field(ge=0)] = 1.0
    #: attempts one request may make in all (the first, retries and hedges)
    max_attempts: Annotated[int, Field(ge=1, le=5)] = 3


class Hedging(_Table):
    enabled: bool = True
    #: a second attempt goes once the first has waited longer than this quantile of recent answers
    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.95
    #: never sooner than this, however fast the set has been
    min_delay_ms: Annotated[float, Field(ge=0)] = 1.0


class Ejection(_Table):
    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    base_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_seconds: Annotated[float, Field(gt=0)] = 300.0
    max_ejected_percent: Annotated[float, Field(ge=0, le=100)] = 50.0


class Health(_Table):
    #: each replica's ``/v2/health/ready`` is asked this often; a replica not ready is left out
    interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    timeout_seconds: Annotated[float, Field(gt=0)] = 1.0


class RemoteSettings(_Table):
    protocol: Literal["rest"] = "rest"
    #: the model's name at the replicas (default: this model's own)
    model: str | None = None
    #: the version asked for at the replicas (default: theirs)
    version: Annotated[str, Field(pattern=r"^[0-9]+$")] | None = None
    #: "host:port" of each replica
    replicas: list[str] = []
    #: or "name:port" resolved to every address it has (a Kubernetes headless Service), again every dns_refresh_seconds
    dns: str | None = None
    dns_refresh_seconds: Annotated[float, Field(gt=0)] = 5.0
    #: a request's deadline at the replicas when the client sets none (its `timeout`, or the model's timeout_ms)
    timeout_ms: Annotated[float, Field(gt=0)] = 30_000.0
    connect_timeout_ms: Annotated[float, Field(gt=0)] = 1_000.0
    #: at load, how long to wait for a replica to tell the model's signature (replicas starting beside the gateway)
    metadata_wait_seconds: Annotated[float, Field(ge=0)] = 30.0
    max_answer_bytes: Annotated[int, Field(gt=0)] = 64 * 1024 * 1024
    #: kept connections per replica
    max_idle_connections: Annotated[int, Field(ge=0)] = 64
    retries: Retries = Retries()
    hedging: Hedging = Hedging()
    ejection: Ejection = Ejection()
    health: Health = Health()

    @model_validator(mode="after")
    def _one_source(self) -> RemoteSettings:
        if bool(self.replicas) == bool(self.dns):
            raise ValueError("name the replicas either in 'replicas' or by 'dns', one of the two")
        for address in [*self.replicas, *([self.dns] if self.dns else [])]:
            split_address(address)
        return self


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) -> (host, port); ValueError saying what is wrong."""
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def read_settings(path: Path) -> RemoteSettings:
    """``remote.toml`` checked; ValueError naming the file and what is wrong."""
    try:
        table = tomllib.loads(path.read_text())
        return RemoteSettings.model_validate(table)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'remote.toml'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {problems}") from None
