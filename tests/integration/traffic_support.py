"""What the traffic control tests share: wine rows as V2 request bodies, a
steady load of clients whose answers are labelled by variant, and a server of
the example repository (the ``wine_server`` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.reference import wine_rows
from tests.support import ServerProcess, SteadyLoad

ROWS = wine_rows(178)


def body(row: int, outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    document: dict[str, Any] = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": ROWS[row].tolist()}]
    }
    if outputs:
        document["outputs"] = [{"name": name} for name in outputs]
    return document


def wine_load(url: str, headers: dict[str, str] | None = None) -> SteadyLoad:
    """Clients sending wine rows; each answer labelled by the variant that served it."""
    return SteadyLoad(
        url,
        "/v2/models/wine/infer",
        lambda request: body(request % len(ROWS)),
        lambda response: response.headers.get("turnout-variant", ""),
        headers=headers,
    )


@pytest.fixture
def wine_server(repo: Path, log_dir: Path) -> Any:
    with ServerProcess(repo, log_dir=log_dir) as server:
        yield server
