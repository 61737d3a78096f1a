"""The feature lookup's Feast backend: Feast's feature server (``feast
serve``), asked over HTTP as KServe's Feast transformer asks it.

Feast runs as its own service, where its online store (SQLite, Redis, ...)
and registry live; turnout needs no Feast package, only an HTTP client
(httpx, the ``feast`` extra), so Feast's dependencies never meet turnout's.
One POST ``/get-online-features`` a lookup, with ``full_feature_names`` so
that two views with a feature of the same name stay apart. Feast answers
column by column, with a status for each value: ``PRESENT`` is a value;
``NOT_FOUND``, ``NULL_VALUE`` and ``OUTSIDE_MAX_AGE`` (a value older than its
view's ttl) are each taken as absent, so the step refuses the entity or uses
its ``defaults``. An entity id that is no integer for an ``int64`` entity is
refused here, as the client's mistake; Feast would answer it with a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from turnout.errors import InvalidRequest, Unavailable
from turnout.pipeline.graph import GraphError
from turnout.urls import without_password

PATH = "/get-online-features"
JSON = {"content-type": "application/json"}


class FeastFeatures:
    def __init__(self, url: str, join_key: str, entity_type: str, features: Sequence[str], timeout_ms: float) -> None:
        try:
            import httpx
        except ImportError:
            raise GraphError("the feast backend asks Feast's feature server with httpx: "
                             "pip install 'turnout[feast]'") from None  # fmt: skip
        self._httpx = httpx
        self._url, self._join_key, self._integers = url, join_key, entity_type == "int64"
        self._features = list(features)
        self._columns = [name.replace(":", "__") for name in features]  # as full_feature_names returns them
        self._timeout_ms = timeout_ms
        self.where = f"Feast at {without_password(url)}"
        self._client: Any = None  # made on the loop that serves, on the first lookup

    async def read(self, ids: list[str]) -> list[list[Any]]:
        entities = [self._entity(entity) for entity in ids]
        body = {"features": self._features, "entities": {self._join_key: entities}, "full_feature_names": True}
        httpx = self._httpx
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._url,
                timeout=self._timeout_ms / 1000,
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            )
        content = orjson.dumps(body)
        try:
            async with asyncio.timeout(self._timeout_ms / 1000):  # the whole lookup, a second try included
                try:
                    answer = await self._client.post(PATH, content=content, headers=JSON)
                except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError):
                    # a kept-alive connection the server closed meanwhile (gunicorn restarts
                    # its worker every --max-requests): a read, sent again once
                    answer = await self._client.post(PATH, content=content, headers=JSON)
        except (TimeoutError, httpx.TimeoutException):
            raise Unavailable(f"the feature store {self.where} did not answer within {self._timeout_ms:g} ms",
                              retry_after=1.0) from None  # fmt: skip
        except httpx.HTTPError as exc:
            raise Unavailable(f"the feature store {self.where} cannot be reached: {exc!r}", retry_after=1.0) from None
        if answer.status_code != 200:
            raise Unavailable(f"the feature store {self.where} answered {answer.status_code}: "
                              f"{answer.text[:300]}", retry_after=1.0)  # fmt: skip
        return self._rows(answer.content, len(ids))

    def _entity(self, entity: str) -> str | int:
        if not self._integers:
            return entity
        try:
            return int(entity)
        except ValueError:
            raise InvalidRequest(f"entity id '{entity[:200]}' is not an integer, as "
                                 f"'{self._join_key}' is in Feast") from None  # fmt: skip

    def _rows(self, content: bytes, count: int) -> list[list[Any]]:
        """Feast's columns turned into a row of the asked features per entity."""
        try:
            answer = orjson.loads(content)
            names = answer["metadata"]["feature_names"]
            columns = dict(zip(names, answer["results"], strict=True))
            picked = [columns[name] for name in self._columns]
            values = [
                [
                    value if status == "PRESENT" else None
                    for value, status in zip(c["values"], c["statuses"], strict=True)
                ]
                for c in picked
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"the feature store {self.where} answered what is not Feast's online features "
                              f"({type(exc).__name__}: {exc})", retry_after=1.0) from None  # fmt: skip
        if any(len(column) != count for column in values):
            raise Unavailable(f"the feature store {self.where} answered {len(values[0])} rows for {count} entities")
        return [list(row) for row in zip(*values, strict=True)]

    def place(self, entity: str) -> str:
        return f"{self._join_key} '{entity[:200]}' in {self.where}"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
