"""The README's walkthrough, top to bottom, in one session as a newcomer runs
it (issue 19): the server started by `make serve` (the command make runs for
it), every command block of the sections that talk to it run as printed in a
checkout-like directory, in the README's order, each against that server or
against the restart the README itself prints; each documented answer checked.

What differs from a newcomer's terminal, and only that: the ports (free
ones, substituted for 8080, 8081, 8082 and Redis's 6379, and
``TURNOUT_ADMIN_URL`` pointing the CLI at the admin port), and each block
runs in a shell of its own (so a block never leans on a variable an earlier
one set, which the README would not show)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import build_models  # examples/ is on the path (tests/conftest.py)
import httpx
import pytest
import redis
from sklearn.datasets import load_breast_cancer, load_iris

from tests.integration.test_readme import README, approximately, block_after
from tests.support import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.ray, pytest.mark.programs("curl", "openssl", "promtool")]

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
# `make test` runs this: the make asked here is a new one, not a sub-make of that run
OUTSIDE_MAKE = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


def steady_port(taken: set[int]) -> int:
    """A free port that stays free across the README's restarts: below the
    kernel's ephemeral range, so no outgoing connection is given it while a
    server restarts on it, and above Ray's worker ports (10002-19999)."""
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        port = random.randrange(20000, first_ephemeral)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free port between 20000 and {first_ephemeral}")


class Session:
    """A checkout-like working directory (``examples/models``, ``.venv``), its
    server, and the blocks run in it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        printed_ports = ("8080", "8081", "8082", "8090", "8091", "8092", "8093", "8094", "6379", "4318", "6566")
        self.ports: dict[str, int] = {}
        for printed in printed_ports:
            self.ports[printed] = steady_port(set(self.ports.values()))
        # this machine's Ray setting (ENVIRONMENT.md), not a README step: no usage-stats prompt or upload
        # a newcomer's terminal: none of the MLflow settings earlier tests in this process left behind
        # (mlflow itself sets MLFLOW_EXPERIMENT_ID in os.environ)
        fresh = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
        self.env = {**fresh, "TURNOUT_ADMIN_URL": f"http://127.0.0.1:{self.ports['8082']}",
                    "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
        self.servers: dict[str, subprocess.Popen[bytes]] = {}  # by the terminal each runs in
        self.log = workdir / "server.log"

    def on_test_ports(self, text: str) -> str:
        for printed, port in self.ports.items():
            for spelling in ("127.0.0.1:{}", "-port {}", "port={}", '"127.0.0.1", {}'):  # -port: --http-port too
                text = text.replace(spelling.format(printed), spelling.format(port))
        return text

    def sh(self, block: str) -> str:
        result = subprocess.run(
            ["bash", "-ec", self.on_test_ports(block)],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"{block}\n{result.stdout}\n{result.stderr}\n{self.server_log()}"
        return result.stdout

    def python(self, block: str) -> str:
        """A Python block, run with .venv/bin/python as the README says."""
        return self.sh(f".venv/bin/python - <<'PYTHON'\n{block}PYTHON\n")

    def serve(self, printed: str, terminal: str = "make serve") -> None:
        """Start the server a block prints, in a terminal of its own: ``make serve
        ...`` is what make runs for it (asked of make itself, in the checkout), a
        ``turnout serve`` line as it is (on the default ports unless it names others)."""
        if printed.startswith("make serve"):
            ports = " ".join(f"{name}_PORT={self.ports[printed]}" for name, printed in
                             (("HTTP", "8080"), ("GRPC", "8081"), ("ADMIN", "8082")))  # fmt: skip
            asked = subprocess.run(
                ["bash", "-c", f"make -n --no-print-directory {printed.removeprefix('make ')} {ports}"],
                cwd=ROOT, capture_output=True, text=True, check=True, env=OUTSIDE_MAKE,
            ).stdout  # fmt: skip
            command = asked[asked.index(".venv/bin/turnout serve") :].replace("\\\n", " ")
        elif "--http-port" in printed:
            command = printed
        else:
            command = printed + "".join(f" --{flag}-port {self.ports[p]}" for flag, p in
                                        (("http", "8080"), ("grpc", "8081"), ("admin", "8082")))  # fmt: skip
        command = self.on_test_ports(command.strip())
        assert "\n" not in command, command
        port = re.search(r"--http-port (\d+)", command)
        assert port, command
        with self.log.open("ab") as log:
            server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.workdir, env=self.env,
                                      stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        self.servers[terminal] = server
        tls = "--tls-cert" in command
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port.group(1)}/v2/health/ready"
        verify: ssl.SSLContext | bool = True
        if tls:  # the README's demo CA and client certificate, made in the working directory
            verify = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
            verify.load_cert_chain(self.workdir / "client.crt", self.workdir / "client.key")

        def ready() -> bool:
            assert server.poll() is None, self.server_log()
            try:
                return httpx.get(url, timeout=2, verify=verify).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, f"the server started by {printed!r}", timeout=60)

    def stop(self, terminal: str = "make serve") -> None:
        """Ctrl-C in the server's terminal."""
        server = self.servers.pop(terminal, None)
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)
            assert server.wait(60) == 0, self.server_log()

    def restart(self, after: str) -> None:
        """Ctrl-C, then the server the ``sh`` block after ``after`` prints."""
        printed = block_after(after, "sh").strip()
        self.stop()
        self.serve(printed)

    def python_prints_as_documented(self, after: str) -> None:
        """The ``python`` block after ``after`` prints the ``text`` block that follows it."""
        assert self.python(block_after(after, "python")) == block_after(after, "text")

    def stop_all(self) -> None:
        for terminal in list(self.servers):
            self.stop(terminal)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def blocks_between(start: str, end: str, language: str) -> list[str]:
    """Every fenced block of ``language`` from ``start`` to ``end``, in order."""
    section = README[README.index(start) : README.index(end, README.index(start))]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_readme_walkthrough_runs_top_to_bottom_as_printed(tmp_path: Path) -> None:
    workdir = tmp_path / "checkout"
    (workdir / "examples").mkdir(parents=True)
    build_models.build(workdir / "examples" / "models")  # the text pipeline too, which example_repo leaves out
    for name in ("load_features.py",):
        shutil.copy(ROOT / "examples" / name, workdir / "examples" / name)
    for tree in ("python_models", "feast"):
        subprocess.run(["cp", "-r", str(ROOT / "examples" / tree), str(workdir / "examples")], check=True)
    (workdir / ".venv").symlink_to(VENV)
    (workdir / ".venv-feast").symlink_to(ROOT / ".venv-feast")  # `make feast`, as `make test` ran it
    session = Session(workdir)
    redis_port = session.ports["6379"]
    definitions = [*(workdir / "examples" / "models" / "cancer_screening").glob("*/pipeline.toml"),
                   *(workdir / "examples" / "feast").glob("*/*/pipeline.toml")]  # fmt: skip
    for pipeline in definitions:  # ports substituted
        pipeline.write_text(session.on_test_ports(pipeline.read_text()))
    try:
        # Quick start: `make serve`, then the admin key in the second terminal
        assert "make serve   #" in block_after("## Quick start", "sh")
        session.serve("make serve")
        session.sh(block_after("First the admin key the later sections use", "sh"))
        session.env["TURNOUT_ADMIN_KEY"] = (workdir / "ops.key").read_text().strip()
        your_own_model(session)
        quick_start(session)
        your_own_runtimes(session)
        model_lifecycle(session)
        mlflow_registry(session)
        traffic_control(session)
        streams(session)
        pipelines(session)
        feast(session)
        batch_jobs(session)
        drift(session)
        alert_rules(session)
        traces(session)
        security(session)
        mutual_tls(session)
        measuring(session)
    finally:
        session.stop_all()
        with contextlib.suppress(redis.ConnectionError):  # never started, or already gone
            redis.Redis(port=redis_port).shutdown(nosave=True)
        _stop_started_in(workdir)  # `feast serve`, put in the background by the README


def your_own_model(session: Session) -> None:
    """The five commands, with their own server in the background, stopped as the README says."""
    five = block_after("### Your own model in five commands", "sh")
    printed = session.sh(five + "kill %1\nwait\n")
    answer = re.search(r"The answer to step 3 is `(\{.*?\})`", README)
    assert answer and printed.startswith(answer.group(1))
    assert "rollout: 1 -> 2, running, candidate at 10% (step 1 of 3: 10% -> 50% -> 100%)" in printed


def quick_start(session: Session) -> None:
    answer = session.sh(block_after("### Try it with curl", "sh"))
    assert approximately(json.loads(answer)) == json.loads(block_after("answers", "json"))
    metadata = session.sh(block_after("Metadata, health and the repository:", "sh"))
    assert '{"ready":true}' in metadata and '"name":"diabetes","versions":["1"]' in metadata
    printed = session.python(block_after("### Try it with Triton's Python client", "python"))
    assert printed == block_after("prints", "text")


BYO = {  # section: (its models, rows to send each: one FP32 input named input)
    "### Serve your own model: scikit-learn": (("cancer_forest",), load_breast_cancer().data[:3]),
    "### Serve your own model: XGBoost and LightGBM": (("cancer_xgb", "cancer_lgb"), load_breast_cancer().data[:3]),
    "### Serve your own model: PyTorch": (("iris_net",), load_iris().data[:3]),
}


def your_own_runtimes(session: Session) -> None:
    """Each "Serve your own model" section: its server beside `make serve`, stopped before the next."""
    session.serve(block_after("Serve it (the server consents too)", "bash").strip(), terminal="your own")
    answer = session.sh(block_after("Serve it (the server consents too)", "sh"))
    assert json.loads(answer) == json.loads(block_after("Serve it (the server consents too)", "json"))
    session.stop("your own")
    for section, (models, rows) in BYO.items():
        session.python(block_after(section, "python"))
        session.serve(block_after(section, "bash").strip(), terminal="your own")
        for model in models:
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                                "data": rows.ravel().tolist()}]}  # fmt: skip
            url = f"http://127.0.0.1:{session.ports['8090']}/v2/models/{model}/infer"
            outputs = httpx.post(url, json=body, timeout=30).raise_for_status().json()["outputs"]
            assert all(output["shape"][0] == len(rows) for output in outputs), (model, outputs)
        session.stop("your own")


def model_lifecycle(session: Session) -> None:
    session.sh(block_after("**Dropping in a new version.**", "sh"))
    wait_until(
        lambda: "default version 2" in session.sh(".venv/bin/turnout models versions diabetes"),
        "version 2 live, as the README says it goes",
        timeout=60,
    )
    steps = [line.split("#")[0] for line in block_after("**Rollback and pinning**", "sh").splitlines() if line]
    versions, rolled_back, pinned, unpinned = (session.sh(step) for step in steps)
    assert "diabetes: default version 2" in versions and "earlier defaults: 1" in versions
    assert "default version 1 (pinned to 1)" in rolled_back
    assert "default version 2 (pinned to 2)" in pinned
    assert unpinned.startswith("diabetes: default version 2\n")
    # each change of default logged once: drop-in 1 -> 2, rollback 2 -> 1, pin 1 -> 2 (unpin keeps 2)
    changes = re.findall(r"model diabetes: version (\d) is now the default \(was (\d)\)", session.log.read_text())
    assert changes == [("2", "1"), ("1", "2"), ("2", "1")], changes


def mlflow_registry(session: Session) -> None:
    """A registry made by the README's own register.py; the extra's install line
    is the one step not run (this environment has every extra, at the lock's versions)."""
    install = block_after("which the data scientist's side needs to log a model:", "sh")
    assert install.strip() == ".venv/bin/pip install --quiet -c constraints.txt -e '.[mlflow]' pandas"
    printed = session.sh(block_after("`register.py` logs a RandomForest", "sh"))
    assert printed == block_after("prints version 1's answer, then version 2's:", "text")


def traffic_control(session: Session) -> None:
    canary = session.sh(block_after("drive the canary:", "sh"))
    assert "policy: canary (baseline=1, candidate=2, weight=10.0), set by model.toml" in canary
    assert "rollout: 1 -> 2, running, candidate at 10% (step 1 of 3: 10% -> 50% -> 100%)" in canary
    assert [line.split()[1] for line in canary.splitlines() if line[:4].isdigit()] == [
        "policy", "promoted", "rolled_back", "rollout"
    ]  # fmt: skip
    blue_green = session.sh(block_after("**Blue/green.**", "sh"))
    assert "live=2" in blue_green and blue_green.rstrip().endswith("live=1), set by ops")
    shown = session.sh(block_after("**Shadow.**", "sh")).splitlines()
    documented = block_after("no pair agrees whole.", "text").splitlines()
    assert shown[-5:-3] == documented[:2]
    assert re.fullmatch(r"  shadow 2: \d+ compared, agreement 0\.0%, 0 errors, \d+ dropped.*", shown[-3]), shown
    assert shown[-2] == documented[3] == "    label: agreement 100.0%"
    assert shown[-1].startswith("    probabilities: agreement 0.0%, |difference| up to ")
    ab = session.sh(block_after("**A/B test.**", "sh"))
    assert '"recorded":true' in ab and "A/B report for 'wine'" in ab
    assert "nothing to compare yet" in ab  # one user, one variant


def drift(session: Session) -> None:
    printed = session.sh(block_after("Here, the diabetes model's own", "sh"))
    assert printed == block_after("--version 1 --repo examples/models --data train.csv", "text")


def batch_jobs(session: Session) -> None:
    install = block_after("installs both; after `make serve` alone:", "sh")
    assert install.strip() == ".venv/bin/pip install --quiet -c constraints.txt -e '.[batch,ray]'"
    session.sh(block_after("scored locally and then on Ray", "sh"))
    compared = session.sh(block_after("same rows in the same order:", "sh"))
    assert compared == block_after("The comparison prints:", "text")


def alert_rules(session: Session) -> None:
    """promtool, run from the checkout (the deploy/ files are the project's own)."""
    checked = subprocess.run(["bash", "-ec", block_after("`promtool` comes with Prometheus", "sh")], cwd=ROOT,
                             env=session.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr


def traces(session: Session) -> None:
    install = block_after("an OpenTelemetry Collector, Jaeger or Tempo instead):", "sh")
    assert install.strip() == ".venv/bin/pip install --quiet -c constraints.txt -e '.[otel]'"
    session.sh(_after_install("### Traces"))
    session.restart("serve with traces sent to it:")
    printed = session.sh(block_after("A request that carries a `traceparent` continues its trace", "sh"))
    assert printed == block_after("prints the request's spans:", "text")


def _after_install(section: str) -> str:
    """The block after the extra's install line in ``section``: the stand-in collector."""
    blocks = blocks_between(section, "Stop the server (Ctrl-C) and serve with traces", "sh")
    assert len(blocks) == 2 and "pip install" in blocks[0]
    return blocks[1]


def streams(session: Session) -> None:
    session.sh(block_after("Try it with the example models and a local Redis", "sh"))
    client = redis.Redis(port=session.ports["6379"])
    wait_until(lambda: _pings(client), "redis-server, daemonized, answering")
    session.restart("start it again with the")
    session.python_prints_as_documented("A producer puts a V2 inference request")
    session.sh(block_after("the dead letters and put them back on the request stream:", "sh"))


def pipelines(session: Session) -> None:
    printed = session.sh(block_after("Put the patients' features in a local Redis", "sh")).splitlines()
    assert printed[0].startswith("569 patients' features in redis://127.0.0.1:")
    assert approximately(json.loads(printed[1])) == json.loads(block_after("answers (patient 0's", "json"))
    session.python_prints_as_documented("Text in, embeddings out, with tritonclient")
    rollout = session.sh(block_after("A pipeline's versions roll out like any model's", "sh"))
    assert "rollout: 1 -> 2, running, candidate at 10% (step 1 of 3: 10% -> 50% -> 100%)" in rollout, rollout


def feast(session: Session) -> None:
    printed = session.sh(block_after("### Features from Feast", "sh"))
    answer = json.loads(printed.splitlines()[-1])
    assert answer["model_name"] == "cancer_screening_feast"
    documented = json.loads(block_after("answers (patient 0's", "json"))
    assert approximately({**answer, "model_name": "cancer_screening"}) == documented


def _stop_started_in(workdir: Path) -> None:
    """SIGTERM to what still runs with its working directory in ``workdir``."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(workdir):
                os.kill(int(proc.name), signal.SIGTERM)


def measuring(session: Session) -> None:
    session.restart("stop its server (Ctrl-C) and start `make serve` again:")
    output = session.sh(block_after("--plot` draws the points with matplotlib", "sh"))
    printed = [line for line in output.splitlines() if line]
    assert [line.split(":")[0] for line in printed] == [f"rest breast_cancer c={c}" for c in (1, 8, 64)], printed
    assert all("errors: none" in line for line in printed), printed
    assert (session.workdir / "results.png").stat().st_size > 0 and (session.workdir / "results.json").exists()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def security(session: Session) -> None:
    session.sh(block_after("create a client key that may", "sh"))
    session.restart("serve with a credential required for inference too:")
    calls = block_after("Clients send `Authorization: Bearer <key>`", "sh")
    documented = re.findall(r"# (\d{3})$", calls, re.M)
    assert documented == ["401", "200", "403", "200"]
    assert session.sh(calls).split() == documented
    session.python_prints_as_documented("With tritonclient, over REST and gRPC")
    revoke = block_after("Revoke a key by its id or by its name", "sh")
    revoked, status = session.sh(revoke).splitlines()
    assert revoked.startswith("revoked key ") and "fraud-app" in revoked
    assert [status] == re.findall(r"# (\d{3})$", revoke, re.M) == ["401"]


def mutual_tls(session: Session) -> None:
    session.sh(block_after("make a demo CA, a server certificate for", "sh"))
    session.restart("Stop the server (Ctrl-C) and serve over mutual TLS:")
    calls = block_after("handshake (curl prints `000`)", "sh")
    assert session.sh(calls).split() == ["000", '{"ready":true}'] == re.findall(r"# (\S+)$", calls, re.M)
    session.python_prints_as_documented("With tritonclient, run with `.venv/bin/python`:")
