"""A full queue answers 503 with Retry-After; a request that waits past its
timeout answers 503; neither disturbs the requests that run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tests.integration.reference import run
from tests.integration.slow_client import SLOW_INPUT, post_slow, slow_output
from tests.support import ServerProcess


def test_full_queue_sheds_load_with_retry_after(server: ServerProcess, test_repo: Path) -> None:
    # slow: max_batch_size 1, max_queue_size 1 -> one running, one waiting, the rest refused
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post_slow(server.url), range(8)))
    refused = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code == 200]
    assert len(refused) + len(served) == 8, [r.text for r in responses]
    assert refused, "8 concurrent requests into a queue of 1 must shed some"
    assert len(served) >= 2
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert "queue is full" in response.json()["error"]
    expected = run(test_repo / "slow" / "1" / "model.onnx", {"x": SLOW_INPUT})["y"]
    for response in served:
        np.testing.assert_allclose(slow_output(response), expected, rtol=1e-5)


def test_request_timeout_parameter(server: ServerProcess) -> None:
    # Six at once with a 1 ms queue timeout, into a queue that holds them all:
    # one runs (~50 ms), those behind it wait longer than 1 ms.
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post_slow(server.url, {"timeout": 1000}, model="slow_queue"), range(6)))
    timed_out = [r for r in responses if r.status_code == 503 and "timed out" in r.json()["error"]]
    assert timed_out, [r.text for r in responses]
    assert all(r.status_code in (200, 503) for r in responses)
    assert post_slow(server.url, model="slow_queue").status_code == 200
    bad = post_slow(server.url, {"timeout": "soon"}, model="slow_queue")
    assert bad.status_code == 400
    assert "timeout" in bad.json()["error"]


def test_a_gateways_timeout_header_bounds_the_queue_as_the_parameter_does(server: ServerProcess) -> None:
    """turnout-timeout-us: what a turnout gateway sends with a body it passes on unread."""
    deadline = {"turnout-timeout-us": "1000"}
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post_slow(server.url, model="slow_queue", headers=deadline), range(6)))
    timed_out = [r for r in responses if r.status_code == 503 and "timed out" in r.json()["error"]]
    assert timed_out, [r.text for r in responses]
    bad = post_slow(server.url, model="slow_queue", headers={"turnout-timeout-us": "-5"})
    assert bad.status_code == 400 and "turnout-timeout-us" in bad.json()["error"]
