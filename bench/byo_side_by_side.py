"""Your own models side by side: a custom Python model and an XGBoost classifier
in turnout, MLServer and LitServe.

    python bench/byo_side_by_side.py [--quick] [--rounds 3] [--duration 5] [--warmup 1]
        [--out bench/.out/byo] [--report BENCHMARKS.md]

Two models, trained on one 32-feature classification set
(``sklearn.datasets.make_classification``): ``logreg``, a logistic regression
run by a few lines of numpy, and ``xgb``, a 100-tree XGBoost classifier. Each
is served as a custom Python model by turnout's Python runtime (in a worker
process, the default, and in the server's process), by an MLServer custom
runtime (``MLModel``, in its parallel inference worker, with its adaptive
batching) and by a LitServe ``LitAPI`` (in its inference worker, with its
batching); ``xgb`` also by turnout's native ``xgboost`` runtime, by
MLServer's XGBoost runtime (``mlserver-xgboost``, with adaptive batching),
and by turnout's ONNX runtime after ``onnxmltools`` converts it.

Every server gets one core (``taskset -c 0``, its worker processes included)
and one process or worker for the model; the load generator (``turnout
bench``, closed loop, one-row requests from the same V2 request file) gets
the other. Server configurations are interleaved in rounds (the order
rotates); each number is the median over rounds. Writes the
``byo-side-by-side`` section of BENCHMARKS.md, with the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402  (bench/report.py)
import sections  # noqa: E402
import side_by_side as sbs  # noqa: E402

SERVERS_DIR = HERE / "servers"
FEATURES = 32
BATCH = 64  # every server's largest batch
MLSERVER_BATCHING = {"max_batch_size": BATCH, "max_batch_time": 0.0005}  # seconds, as mlp_small's


def _turnout(layout: str) -> sbs.Launch:
    def command(repos: Path, ports: sbs.Ports) -> tuple[list[str], dict[str, str]]:
        argv, env = sbs._turnout(layout)(repos, ports)
        return [*argv, "--allow-trusted-models"], env

    return command


def _litserve(model: str) -> sbs.Launch:
    def command(repos: Path, ports: sbs.Ports) -> tuple[list[str], dict[str, str]]:
        argv = [str(sbs.VENVS / "litserve" / "bin" / "python"), str(SERVERS_DIR / "litserve_server.py")]
        argv += [str(repos / "litserve" / model), "--model", model, "--port", str(ports.http)]
        argv += ["--max-batch-size", str(BATCH)]
        return argv, {}

    return command


def _config(name: str, key: str, protocols: tuple[str, ...], command: sbs.Launch, ready: str = "") -> sbs.ServerConfig:
    return sbs.ServerConfig(name, key, protocols, command, **({"ready_path": ready} if ready else {}))


BOTH = ("rest", "grpc")
SERVERS: dict[str, tuple[sbs.ServerConfig, ...]] = {
    model: (
        _config("turnout Python (worker process)", "turnout_python", BOTH, _turnout("turnout_python")),
        _config("turnout Python (in-process)", "turnout_python_inproc", BOTH, _turnout("turnout_python_inproc")),
        _config("MLServer custom runtime", "mlserver_custom", BOTH, sbs._mlserver("mlserver_custom")),
        _config("LitServe LitAPI", f"litserve_{model}", ("rest",), _litserve(model), ready="/health"),
    )
    for model in ("logreg", "xgb")
}
SERVERS["xgb"] += (
    _config("turnout xgboost runtime", "turnout_native", BOTH, _turnout("turnout_native")),
    _config("turnout ONNX (onnxmltools)", "turnout_onnx", BOTH, _turnout("turnout_onnx")),
    _config("MLServer XGBoost runtime", "mlserver_xgboost", BOTH, sbs._mlserver("mlserver_xgboost")),
)


# ---------------------------------------------------------------- models


def build(repos: Path) -> None:
    """Every layout's repository, the request file, from one training run."""
    import numpy as np
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=5000, n_features=FEATURES, n_informative=16, random_state=0)
    x = x.astype(np.float32)
    shutil.rmtree(repos, ignore_errors=True)
    scratch = repos / "artifacts"
    scratch.mkdir(parents=True)
    linear = LogisticRegression(max_iter=1000).fit(x, y)
    np.savez(
        scratch / "weights.npz", coef=linear.coef_[0].astype(np.float32), intercept=linear.intercept_.astype(np.float32)
    )
    classifier = xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1).fit(x, y)
    classifier.get_booster().save_model(scratch / "model.json")
    onnx = onnxmltools.convert_xgboost(classifier, initial_types=[("input", FloatTensorType([None, FEATURES]))])
    (scratch / "model.onnx").write_bytes(onnx.SerializeToString())
    artifact = {"logreg": "weights.npz", "xgb": "model.json"}
    for model in ("logreg", "xgb"):
        python_toml = f'runtime.name = "python"\ntrusted = true\nmax_batch_size = {BATCH}\n'
        in_process = python_toml + '[runtime.options]\nisolation = "none"\n'
        for layout, toml in (("turnout_python", python_toml), ("turnout_python_inproc", in_process)):
            version = _version(repos / layout / model, toml)
            shutil.copyfile(SERVERS_DIR / "python_models" / f"{model}.py", version / "model.py")
            shutil.copyfile(scratch / artifact[model], version / artifact[model])
        implementation = {"logreg": "LogisticRegression", "xgb": "XGBoostClassifier"}[model]
        _mlserver_model(repos / "mlserver_custom" / model, f"mlserver_python.{implementation}", artifact[model])
        shutil.copyfile(scratch / artifact[model], repos / "mlserver_custom" / model / artifact[model])
        (repos / "litserve" / model).mkdir(parents=True)
        shutil.copyfile(scratch / artifact[model], repos / "litserve" / model / artifact[model])
        row = x[:1].ravel().tolist()
        request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, FEATURES], "data": row}]}
        (repos / "inputs").mkdir(exist_ok=True)
        (repos / "inputs" / f"{model}.json").write_text(json.dumps(request))
    version = _version(repos / "turnout_native" / "xgb", f'runtime.name = "xgboost"\nmax_batch_size = {BATCH}\n')
    shutil.copyfile(scratch / "model.json", version / "model.json")
    version = _version(repos / "turnout_onnx" / "xgb", f"max_batch_size = {BATCH}\n")
    shutil.copyfile(scratch / "model.onnx", version / "model.onnx")
    _mlserver_model(repos / "mlserver_xgboost" / "xgb", "mlserver_xgboost.XGBoostModel", "model.json")
    shutil.copyfile(scratch / "model.json", repos / "mlserver_xgboost" / "xgb" / "model.json")
    for layout in ("mlserver_custom", "mlserver_xgboost"):
        # one inference worker, as MLServer runs custom runtimes by default, on the server's one core
        settings = {"parallel_workers": 1, "metrics_endpoint": None, "debug": False, "load_models_at_startup": True}
        (repos / layout / "settings.json").write_text(json.dumps(settings))


def _version(model_dir: Path, toml: str) -> Path:
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "model.toml").write_text(toml)
    return model_dir / "1"


def _mlserver_model(model_dir: Path, implementation: str, artifact: str) -> None:
    model_dir.mkdir(parents=True)
    settings = {
        "name": model_dir.name,
        "implementation": implementation,
        "parameters": {"uri": f"./{artifact}", "version": "1"},
        **MLSERVER_BATCHING,
    }
    (model_dir / "model-settings.json").write_text(json.dumps(settings))


# ---------------------------------------------------------------- measuring and the report


def measure(plan: sbs.Plan) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for round_ in range(plan.rounds):
        for model in plan.models:
            servers = [s for s in SERVERS[model] if s in plan.servers]
            shift = round_ % len(servers)
            for server in servers[shift:] + servers[:shift]:
                records += sbs._measure_server(plan, round_, model, server)
    return records


def targets(results: report.Results) -> list[str]:
    def get(model: str, server: str, protocol: str = "rest", c: int = 64) -> report.Point | None:
        return results.get(model, server, protocol, c)

    rows = ["| target | result | detail |", "|---|---|---|"]
    for model in ("logreg", "xgb"):
        ours, mls, lit = get(model, "turnout_python"), get(model, "mlserver_custom"), get(model, f"litserve_{model}")
        if ours and mls and lit:
            a, b = ours.throughput / mls.throughput, ours.throughput / lit.throughput
            p99 = ours.p99 <= min(mls.p99, lit.p99)
            held = a >= 2.5 and b >= 2.0 and p99
            rows.append(
                f"| 1. custom Python `{model}`, REST c=64: turnout >= 2.5x MLServer, >= 2x LitServe, p99 no worse "
                f"| **{'PASS' if held else 'FAIL'}** | turnout {ours.throughput:,.0f} req/s (p99 {ours.p99:.2f} ms); "
                f"MLServer {mls.throughput:,.0f} (p99 {mls.p99:.2f}): **{a:.2f}x**; LitServe {lit.throughput:,.0f} "
                f"(p99 {lit.p99:.2f}): **{b:.2f}x** |"
            )
        worker, inproc = get(model, "turnout_python", c=1), get(model, "turnout_python_inproc", c=1)
        if worker and inproc:
            added = worker.p50 - inproc.p50
            rows.append(
                f"| 1. `{model}`, REST c=1 p50: a worker process adds <= 0.1 ms over in-process "
                f"| **{'PASS' if added <= 0.1 else 'FAIL'}** | {worker.p50:.3f} ms - {inproc.p50:.3f} ms = "
                f"**{added:.3f} ms** |"
            )
    for protocol in ("rest", "grpc"):
        native, mls, onnx = (get("xgb", s, protocol) for s in ("turnout_native", "mlserver_xgboost", "turnout_onnx"))
        if native and mls:
            ratio = native.throughput / mls.throughput
            versus_onnx = (
                f"; turnout ONNX {onnx.throughput:,.0f} req/s: native/ONNX {native.throughput / onnx.throughput:.2f}x"
                if onnx
                else ""
            )
            rows.append(
                f"| 2. XGBoost, {protocol} c=64: turnout native >= 2.5x MLServer's XGBoost runtime "
                f"| **{'PASS' if ratio >= 2.5 else 'FAIL'}** | turnout {native.throughput:,.0f} req/s vs MLServer "
                f"{mls.throughput:,.0f}: **{ratio:.2f}x**{versus_onnx} |"
            )
    return rows


def render(records: list[dict[str, Any]], invocation: str) -> str:
    results = report.Results(records)
    names = {s.key: s.name for servers in SERVERS.values() for s in servers}
    lines = [
        "## Your own models: custom Python and XGBoost against MLServer and LitServe",
        "",
        f"`{invocation}` (see its docstring for the set-up). Each server on core 0 with one worker for the model, "
        "the load generator on core 1; one-row requests; medians over rounds.",
        "",
        *targets(results),
    ]
    for model in ("logreg", "xgb"):
        lines += ["", f"### {model}", "", "| server | protocol | concurrency | req/s | p50 ms | p99 ms | errors |"]
        lines.append("|---|---|---:|---:|---:|---:|---:|")
        for (m, server, protocol, c), p in sorted(
            results.points.items(), key=lambda kv: (list(names).index(kv[0][1]), kv[0][2], kv[0][3])
        ):
            if m == model:
                numbers = f"{p.throughput:,.0f} | {p.p50:.3f} | {p.p99:.3f} | {p.errors}"
                lines.append(f"| {names[server]} | {protocol} | {c} | {numbers} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, 2 s per point")
    parser.add_argument("--models", default="logreg,xgb")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=HERE / ".out" / "byo")
    parser.add_argument("--report", type=Path, default=None, help="write the section into this BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
    chosen = tuple(args.models.split(","))
    plan = sbs.Plan(
        models=chosen,
        servers=tuple({s for m in chosen for s in SERVERS[m]}),
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        raw_duration=0.0,
        out=args.out.resolve(),
    )
    subprocess.run([str(HERE / "setup_envs.sh"), "mlserver", "litserve"], check=True)
    build(plan.repos)
    plan.results.mkdir(parents=True, exist_ok=True)
    records = measure(plan)
    (plan.results / "records.json").write_text(json.dumps(records, indent=1) + "\n")
    invocation = "python bench/byo_side_by_side.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    body = render(records, invocation.strip())
    print(body)
    if args.report is not None:
        sections.put(args.report, "byo-side-by-side", body)


if __name__ == "__main__":
    main()
