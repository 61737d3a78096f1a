"""Alerts turnout raises itself (drift over its threshold), posted to a
webhook in Alertmanager's webhook format (``version`` "4"), so whatever
receives Alertmanager's notifications receives turnout's.

An alert fires once when its condition starts to hold and is posted again,
as resolved, when it stops; not on every window in between. Posting happens
in a worker thread: a slow or dead receiver never holds up a request, and a
failed post is logged, not retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("turnout.alerts")

NEVER = "0001-01-01T00:00:00Z"  # Alertmanager's "no end yet"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class AlertNotifier:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self._url = url
        self._timeout = timeout
        self._firing: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}  # labels -> the alert as posted
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, holds: bool, labels: Mapping[str, str], annotations: Mapping[str, str]) -> None:
        """The condition named by ``labels`` (``alertname`` among them) holds now, or not."""
        key = tuple(sorted(labels.items()))
        if holds and key not in self._firing:
            alert = {
                "status": "firing",
                "labels": dict(labels),
                "annotations": dict(annotations),
                "startsAt": _now(),
                "endsAt": NEVER,
                "generatorURL": "",
                "fingerprint": hashlib.sha256(repr(key).encode()).hexdigest()[:16],
            }
            self._firing[key] = alert
            self._post("firing", [alert])
        elif not holds and key in self._firing:
            alert = {**self._firing.pop(key), "status": "resolved", "endsAt": _now()}
            self._post("resolved", [alert])

    def _post(self, status: str, alerts: list[dict[str, Any]]) -> None:
        common = alerts[0]["labels"]
        payload = {
            "version": "4",
            "receiver": "turnout",
            "status": status,
            "groupKey": f"turnout:{common.get('alertname', '')}",
            "groupLabels": {"alertname": common.get("alertname", "")},
            "commonLabels": common,
            "commonAnnotations": alerts[0]["annotations"],
            "externalURL": "",
            "truncatedAlerts": 0,
            "alerts": alerts,
        }
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._send, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self._url, data=json.dumps(payload).encode(), method="POST", headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout):
                pass
        except (urllib.error.URLError, OSError) as exc:
            log.error("alert %s not delivered to %s: %s", payload["groupKey"], self._url, exc)

    async def close(self) -> None:
        """Let the posts under way finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
