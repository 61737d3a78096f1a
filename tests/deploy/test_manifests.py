"""The container image and Kubernetes manifests in deploy/, checked offline
(no Docker daemon and no cluster exist here; the README says so):

- the core kinds (Deployment, Service, PodDisruptionBudget,
  HorizontalPodAutoscaler, ConfigMap) against Kubernetes' own OpenAPI schema,
  strictly (an unknown field fails), with kubernetes-validate;
- the custom resources (KServe's ServingRuntime and InferenceService, the
  Prometheus Operator's ServiceMonitor, KEDA's ScaledObject), whose schemas
  ship with their operators, only for what turnout relies on: that they name
  the objects, ports and routes that exist;
- every `turnout serve` command line (the Dockerfile's, each container's)
  through `turnout config`, which refuses an unknown flag or value;
- the gateway's repository in its ConfigMap, read by turnout's own readers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from turnout.model.repository import ModelRepository
from turnout.model.runtimes.catalog import BUILT_IN, RuntimeCatalog
from turnout.routing.remote.runtime import RemoteRuntime
from turnout.routing.remote.settings import read_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.30.0"  # the oldest release still supported upstream when this was written
CORE = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"}
ROUTES = {"/v2/health/ready", "/v2/health/live", "/metrics"}


def resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [resource for _, resource in resources() if resource["kind"] == kind]


def containers() -> list[dict[str, Any]]:
    pods = [d["spec"]["template"]["spec"] for d in by_kind("Deployment")] + [
        s["spec"] for s in by_kind("ServingRuntime")
    ]
    return [container for pod in pods for container in pod["containers"]]


def test_there_are_manifests_for_each_part() -> None:
    kinds = {resource["kind"] for _, resource in resources()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor",
            "ServingRuntime", "InferenceService", "ScaledObject", "ConfigMap"} <= kinds  # fmt: skip


@pytest.mark.parametrize(("name", "resource"), [r for r in resources() if r[1]["kind"] in CORE],
                         ids=lambda value: value if isinstance(value, str) else value["metadata"]["name"])  # fmt: skip
def test_core_kinds_fit_the_kubernetes_schema_strictly(name: str, resource: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {resource['kind']} {resource['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_a_strict_check_would_catch_a_mistake() -> None:
    deployment = json.loads(json.dumps(by_kind("Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def serve_arguments() -> list[list[str]]:
    """Every `turnout serve` command line: each container's args, and the Dockerfile's CMD."""
    lines = [container["args"] for container in containers()]
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*?\])\s*$", dockerfile.replace("\\\n", ""), re.M | re.S)
    assert cmd, "the Dockerfile has no CMD in exec form"
    lines.append(json.loads(cmd.group(1)))
    return lines


@pytest.mark.parametrize("arguments", serve_arguments(), ids=lambda a: a[0])
def test_every_serve_command_line_is_one_turnout_takes(arguments: list[str], tmp_path: Path) -> None:
    """`turnout config` reads a command line as `serve` does, and refuses what it would refuse."""
    local = [str(tmp_path / "keys.db") if a.startswith("/etc/turnout/keys") else a for a in arguments]
    done = subprocess.run([sys.executable, "-m", "turnout", "config", *local], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'host = "0.0.0.0"' in done.stdout  # reachable from outside the pod
    assert "port = 8080" in done.stdout


def test_the_image_runs_turnout_serve_as_an_unprivileged_user_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final = dockerfile[dockerfile.rindex("\nFROM ") :]
    assert re.search(r"^USER 10001$", final, re.M)
    assert 'ENTRYPOINT ["turnout", "serve"]' in final
    assert "HEALTHCHECK" in final and "/v2/health/ready" in final
    assert "constraints.txt" in dockerfile  # installed at the locked versions
    assert "build_models.py /models --no-text" in dockerfile
    for source in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is not in the checkout"


def test_pods_run_as_non_root_with_probes_on_turnout_routes_and_room_to_drain() -> None:
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = pod["containers"][0]
        named = {port["name"] for port in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] in ROUTES and check["port"] in named
        grace = float(container["args"][container["args"].index("--shutdown-grace") + 1])
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] >= grace + pause + 5
    for runtime in by_kind("ServingRuntime"):
        assert runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] in ROUTES


def test_services_budgets_and_scalers_point_at_what_exists() -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}

    def selects(selector: dict[str, str]) -> bool:
        return any(all(found.get(k) == v for k, v in selector.items()) for found in labels.values())

    for service in by_kind("Service"):
        assert selects(service["spec"]["selector"]), service["metadata"]["name"]
    for budget in by_kind("PodDisruptionBudget"):
        assert selects(budget["spec"]["selector"]["matchLabels"]), budget["metadata"]["name"]
    for scaler in by_kind("HorizontalPodAutoscaler"):
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments
        assert scaler["spec"]["metrics"][0]["pods"]["metric"]["name"] == "turnout_inflight_requests"
    for scaled in by_kind("ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
        assert "turnout_inflight_requests" in scaled["spec"]["triggers"][0]["metadata"]["query"]
    for monitor in by_kind("ServiceMonitor"):
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["path"] == "/metrics"
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        watched = [s for s in by_kind("Service") if all(s["metadata"]["labels"].get(k) == v for k, v in wanted)]
        assert watched and all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in watched)


def test_the_kserve_runtime_serves_what_the_inference_service_asks_for() -> None:
    (runtime,) = by_kind("ServingRuntime")
    (service,) = by_kind("InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"  # the name KServe expects of the serving container
    assert container["args"][0] == "/mnt/models"  # where KServe's storage initializer puts the storageUri
    assert container["ports"][0]["containerPort"] == int(container["args"][container["args"].index("--http-port") + 1])


def test_the_gateways_repository_is_one_turnout_reads(tmp_path: Path) -> None:
    (config_map,) = [c for c in by_kind("ConfigMap") if c["metadata"]["name"] == "turnout-gateway-models"]
    gateway = next(d for d in by_kind("Deployment") if d["metadata"]["name"] == "turnout-gateway")
    volume = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    for item in volume["configMap"]["items"]:
        path = tmp_path / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_map["data"][item["key"]])
    settings = read_settings(tmp_path / "diabetes" / "1" / "remote.toml")
    service = settings.dns.partition(":")[0] if settings.dns else ""
    headless = [s for s in by_kind("Service") if s["metadata"]["name"] == service]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"
    # read as a server reads it: model.toml's runtime found, remote.toml checked (no replica asked)
    source = ModelRepository(tmp_path, RuntimeCatalog({**BUILT_IN, "remote": RemoteRuntime})).read("diabetes")
    assert source.config.runtime.name == "remote" and list(source.versions) == [1]
