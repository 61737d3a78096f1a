"""The web dashboard in a real browser (Debian's chromium, headless, driven
by Playwright): the page loads, lists the example models with their state
and the wine canary, its throughput chart draws once requests are sent, and
drift is shown reference against live. A screenshot is kept as an artifact
(tests/.artifacts/dashboard.png)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright
from sklearn.datasets import load_diabetes, load_wine

from tests.support import ServerProcess, free_port

pytestmark = [pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def traffic(url: str, stop: threading.Event) -> None:
    rows = load_diabetes().data.astype(np.float32)
    with httpx.Client(base_url=url) as client:
        i = 0
        while not stop.is_set():
            chunk = rows[(i * 50) % 400 : (i * 50) % 400 + 50]
            tensor = {"name": "input", "datatype": "FP32", "shape": list(chunk.shape), "data": chunk.ravel().tolist()}
            client.post("/v2/models/diabetes/infer", json={"inputs": [tensor]})
            i += 1


def test_the_dashboard_shows_models_charts_and_drift(repo: Path, log_dir: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    stop = threading.Event()
    for pipeline in (repo / "cancer_screening").glob("*/pipeline.toml"):  # a feature store no one runs
        pipeline.write_text(pipeline.read_text().replace(":6379/", f":{free_port()}/"))
    with ServerProcess(repo, log_dir=log_dir) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{server.url}/ui")
            # no traffic yet: the scale's top reads 0, not a 1.00e-9 floor
            expect(page.locator("#throughput text.top")).to_have_text("0")
            for name in ("breast_cancer", "diabetes", "wine"):
                expect(page.locator(f'#models tr[data-model="{name}"]')).to_be_visible()
            expect(page.locator('#models tr[data-model="wine"] .policy')).to_contain_text("canary")
            expect(page.locator('#models tr[data-model="wine"]')).to_contain_text("READY")
            # wine's canary (model.toml: 10% to version 2) in the routing table, with what each variant answered
            wine = load_wine().data.astype(np.float32)
            for i in range(40):
                tensor = {"name": "input", "datatype": "FP32", "shape": [1, 13], "data": wine[i].tolist()}
                httpx.post(f"{server.url}/v2/models/wine/infer", json={"inputs": [tensor]}).raise_for_status()
            expect(page.locator('#routing tr[data-model="wine"][data-variant="2"] .weight')).to_have_text("10")
            expect(page.locator('#routing tr[data-model="wine"][data-variant="1"] .weight')).to_have_text("90")
            page.wait_for_function(
                """() => [...document.querySelectorAll('#routing tr[data-model="wine"]')]
                         .reduce((sum, row) => sum + Number(row.children[4].textContent), 0) === 40""",
                timeout=10_000,
            )
            # a pipeline's steps in order; its feature store is not running, so the lookup fails
            steps = page.locator('#pipelines tr[data-model="cancer_screening"]')
            expect(steps).to_have_count(4)
            expect(steps.nth(0)).to_contain_text("cancer_screening v2")
            order = [("features", "—"), ("scale", "cancer_scaler"), ("risk", "cancer_risk v1, cancer_risk v2"),
                     ("label", "—")]  # fmt: skip
            for i, (step, calls) in enumerate(order):
                expect(steps.nth(i).locator("td").nth(1)).to_have_text(f"{i + 1}. {step}")
                expect(steps.nth(i).locator("td").nth(3)).to_have_text(calls)
            patient = {"name": "patient_id", "datatype": "BYTES", "shape": [1], "data": ["7"]}
            assert (
                httpx.post(f"{server.url}/v2/models/cancer_screening/infer", json={"inputs": [patient]}).status_code
                == 503
            )
            expect(page.locator('#pipelines tr[data-step="features"] td').nth(5)).to_have_text("1")  # failed
            expect(page.locator('#pipelines tr[data-step="scale"] td').nth(4)).to_have_text("0")  # never ran
            # no policy in force anywhere: the table says so, and the rest of the page still draws
            with server.admin_client() as admin:
                admin.delete("/v2/routing/wine").raise_for_status()
            expect(page.locator("#routing tr.none")).to_have_text("No routing policy in force.")
            expect(page.locator("#status")).to_have_text("")
            sender = threading.Thread(target=traffic, args=(server.url, stop))
            sender.start()
            # the chart draws its lines as polls see the requests (three models, a point a second each)
            page.wait_for_function(
                "() => Number(document.getElementById('throughput').getAttribute('data-points')) > 15", timeout=30_000
            )
            expect(page.locator('#drift [data-feature="bmi"]')).to_be_visible(timeout=20_000)  # a window of 1000 rows
            expect(page.locator("#throughput text.top")).to_have_text(re.compile(r"^[1-9][\d,]*(\.\d+)?$"))
            for name in ("breast_cancer", "diabetes", "wine"):  # whole names, in a legend that wraps
                key = page.locator(f'#throughput-legend [data-model="{name}"]')
                expect(key).to_have_text(name)
                box, legend = key.bounding_box(), page.locator("#throughput-legend").bounding_box()
                assert box and legend and box["x"] + box["width"] <= legend["x"] + legend["width"] + 0.5
                assert key.evaluate("e => e.scrollWidth <= e.clientWidth || getComputedStyle(e).display === 'inline'")
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            answered = int(page.locator('#models tr[data-model="diabetes"] td').nth(4).inner_text())
            assert answered > 0
        finally:
            stop.set()
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
