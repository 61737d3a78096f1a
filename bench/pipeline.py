"""Pipelines against their own steps: what a pipeline adds per step, and how
close it comes to its slowest step alone and to raw ONNX Runtime.

    .venv/bin/python bench/pipeline.py [--rounds 3] [--duration 10] [--warmup 2] [--json OUT.json]

Builds examples/build_models.py's repository in a temporary directory; in that
copy points cancer_screening at a redis-server started on a free port (pinned
to core 1, beside the load generator; patients loaded by
examples/load_features.py), the models as the examples ship them (minilm with
one intra-op thread: with 0, ONNX Runtime pins a pool thread to core 1, out of
the server's taskset).
Each round starts ``turnout serve`` on core 0, drives it from core 1 with
turnout's load generator (src/turnout/bench: closed loop over gRPC, raw tensor
contents, the cheaper client path; no busy-polling, which would starve Redis
on core 1), stops it, then runs the same work by hand in-process on core 0
(ONNX Runtime with intra_op_num_threads=1, as bench/raw_ort.py). Each term is
taken within a round; the report gives the median over rounds of each.

1. Overhead per step, c=1, 1 row (bar <= 30 us): (cancer_screening v1 p50
   - by hand p50 [HMGET + cancer_scaler + cancer_risk v1, v2 + average + argmax]
   - transport [cancer_scaler p50 - its session.run p50]) / 4 steps. The four
   terms are taken in turn, one second each, in --windows windows a round
   (a driver and a by-hand process kept running between them), and each
   window gives one figure: this VM's noise moves over seconds, so terms
   measured minutes apart differed by more than the figure itself.
2. cancer_screening v1 req/s at c=64 / the slowest of cancer_scaler, cancer_risk
   v1, v2, each alone at c=64 (bar >= 0.80). Also shown: the steps combined on
   one core, 1 / sum(1 / req/s): a pipeline paying each step per request would
   stay below it; one batching at its entrance can pass it.
3. text_embedding rows/s at c=64 (one sentence per request) / raw rows/s of
   encode_batch + session.run at the batch size minilm's batcher formed (mean of
   turnout_batch_size over the point, nearest of RAW_BATCHES) (bar >= 0.80).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY, TURNOUT = str(ROOT / ".venv" / "bin" / "python"), str(ROOT / ".venv" / "bin" / "turnout")
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RAW_BATCHES = (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)
STEPS = 4  # features, scale, risk, label
POINTS = [  # (key, model, version, requests, concurrency), in the order measured
    ("pipeline_c64", "cancer_screening", "1", "patient", 64),
    ("scaler_c64", "cancer_scaler", "", "features", 64),
    ("risk1_c64", "cancer_risk", "1", "scaled", 64),
    ("risk2_c64", "cancer_risk", "2", "scaled", 64),
    ("text_c64", "text_embedding", "", "text", 64),
]
SENTENCES = [  # 13-17 words, 17-22 tokens with [CLS]/[SEP]: every one pads to 32
    "The morning train to the city was late again because of a signal fault near the bridge.",
    "She planted tomatoes, basil and a row of sunflowers along the sunny side of the garden.",
    "Our team shipped the new release on Friday after two weeks of careful testing.",
    "The museum opens an exhibition of early photographs from the coastal villages next month.",
    "He forgot his umbrella at the cafe and walked home through the heavy rain.",
    "Scientists measured the temperature of the lake every hour for an entire hot summer.",
    "The recipe calls for two cups of flour, three eggs and a pinch of salt.",
    "Please send me the quarterly report before the board meeting on Thursday afternoon, if possible.",
    "A small bakery on the corner sells the best cinnamon rolls in the whole town.",
    "The children built a sandcastle with towers, bridges and a moat filled with seawater.",
    "After the storm, volunteers cleared fallen branches from the roads and the school playground.",
    "The hotel room had a small balcony overlooking the harbour and the old lighthouse.",
    "My grandmother still writes long letters by hand and posts them every Monday morning.",
    "The software update fixed the battery drain but introduced a new bug in the camera app.",
    "They hiked for six hours to reach the lake at the top of the valley.",
    "The library extended its opening hours during the exam period for all university students.",
    "A flock of geese flew south over the fields as the evening grew colder.",
    "The doctor recommended more sleep, less coffee and a short walk after every meal.",
    "Our neighbours adopted a shy grey cat from the local animal shelter last weekend.",
    "The orchestra rehearsed the final movement until every note sounded exactly right.",
    "Traffic on the motorway slowed to a crawl because of roadworks near the airport.",
    "He learned to play the guitar by watching videos and practising every single evening.",
    "The farmers market sells fresh vegetables, local cheese and honey every Saturday morning.",
    "The new bicycle lanes made it much safer to cycle to work in the city centre.",
    "She finished reading the novel in one night because she could not put it down.",
    "The company announced plans to open three new offices in Europe early next year.",
    "Heavy snow closed the mountain pass, so the drivers had to wait in the village.",
    "The students presented their research on renewable energy to a panel of visiting engineers.",
    "A gentle breeze carried the smell of the sea through the open kitchen window.",
    "The restaurant changes its menu every season to use the freshest local ingredients.",
    "Engineers inspected the old stone bridge and decided it needed new supports before winter.",
    "The puppy chewed one of my shoes while I was answering the phone in the hall.",
    "We watched the sun set over the hills from the terrace of the small hotel.",
    "The council approved funding for a new playground and a community garden in the park.",
    "His presentation was short, clear and full of useful examples from real projects.",
    "The price of coffee beans rose sharply after a poor harvest in several countries.",
    "The astronauts spent six months on the space station running experiments on plant growth.",
    "A power cut left the whole street in darkness for most of the evening.",
    "The teacher asked the class to write a short story about an unexpected journey.",
    "The bakery ran out of bread by noon because of the holiday weekend crowds.",
    "I need to renew my passport before we travel to Japan in the spring.",
    "The river flooded the lower fields after three days of continuous rain in the hills.",
    "Our flight was cancelled, so we spent the night in a hotel near the airport.",
    "The gardener trimmed the hedges and raked the leaves from the lawn on Tuesday.",
    "The film won several awards for its music, its photography and its lead actress.",
    "Customers can now return unwanted items at any store within thirty days of purchase.",
    "The old clock in the town square has not worked properly for many years.",
    "She practised her speech in front of the mirror until she knew it by heart.",
    "The hospital opened a new wing for children with a garden and a reading room.",
    "A sudden gust of wind blew the papers off the desk and across the office floor.",
    "The team analysed customer feedback to decide which features to build next quarter.",
    "We painted the kitchen a pale shade of yellow to make it feel brighter.",
    "The ferry crosses to the island twice a day, weather permitting, during the winter.",
    "He repaired the broken garden fence with wood left over from building the shed.",
    "The conference brought together researchers from more than forty countries to share their results.",
    "The old lighthouse keeper climbed the spiral stairs every night to check the lamp.",
    "They celebrated their anniversary with a picnic beside the river where they first met.",
    "The new phone has a larger screen, a faster processor and a much better camera.",
    "Rain is expected across the north tomorrow, with sunshine returning by the weekend.",
    "The volunteers collected over two hundred bags of litter from the beach on Sunday.",
    "My brother is learning Spanish so he can talk with his colleagues in Madrid.",
    "The bookshop hosts a reading group on the first Wednesday of every month.",
    "The pilot announced that we would land twenty minutes early thanks to a strong tailwind.",
    "Fresh snow covered the rooftops and the streets were quiet early on Christmas morning.",
]


# ---------------------------------------------------------------- children (pinned by the parent)


def _tensors(kind: str) -> list[dict[str, tuple[str, Any]]]:
    """The requests a client sends in turn, 1 row each."""
    import numpy as np

    if kind == "patient":
        return [{"patient_id": ("BYTES", np.array([str(i).encode()], dtype=object))} for i in range(64)]
    if kind == "text":
        return [{"text": ("BYTES", np.array([s.encode()], dtype=object))} for s in SENTENCES]
    if kind == "features":  # unscaled, as Redis holds them
        from sklearn.datasets import load_breast_cancer

        rows = load_breast_cancer().data[:64].astype(np.float32)
    else:  # standardised
        rows = np.random.default_rng(0).standard_normal((64, 30)).astype(np.float32)
    return [{"input": ("FP32", rows[i : i + 1])} for i in range(64)]


async def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    from turnout.bench import payloads
    from turnout.bench.grpc_client import GrpcCallError, GrpcTarget
    from turnout.bench.loadgen import Send, closed_loop

    target = GrpcTarget(f"127.0.0.1:{spec['grpc']}")
    header = target.header_block("/inference.GRPCInferenceService/ModelInfer")
    messages = [payloads.grpc_message(spec["model"], spec["version"], t) for t in _tensors(spec["kind"])]
    connections = [await target.connect() for _ in range(min(4, spec["concurrency"]))]  # as `turnout bench`
    clients = itertools.count()

    async def factory() -> Send:
        client = next(clients)  # each client starts at its own request
        turn, connection = itertools.count(client), connections[client % len(connections)]

        async def send() -> str | None:
            try:
                await connection.call(header, messages[next(turn) % len(messages)])
            except GrpcCallError as exc:
                return exc.kind
            return None

        return send

    result = await closed_loop(factory, spec["concurrency"], spec["duration"], spec["warmup"])
    return result.as_json()


def _drive_loop(grpc: int) -> None:
    """A driver kept running: one JSON command a line ({"model", "version",
    "kind", "duration"}), one JSON answer a line (the closed loop's result at c=1)."""
    import uvloop

    for line in sys.stdin:
        command = json.loads(line)
        spec = {"grpc": grpc, "concurrency": 1, "warmup": 0.2} | command
        print(json.dumps(uvloop.run(_drive(spec))), flush=True)


def _hand_loop(spec: dict[str, Any]) -> None:
    """The by-hand work kept ready: "hand" or "scaler" a line, the median µs of
    that much of it for ``duration`` seconds a line back."""
    by_hand, scaler_run = _hand(spec)
    for line in sys.stdin:
        what, duration = line.split()
        run = by_hand if what == "hand" else scaler_run
        print(json.dumps(_timed(run, float(duration))[0]), flush=True)


def _timed(run: Callable[[], Any], duration: float) -> tuple[float, float]:
    """Median microseconds of ``run()`` over ``duration`` seconds (after a short warm-up), and calls per second."""
    for _ in range(10):
        run()
    times: list[int] = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        began = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - began)
    return statistics.median(times) / 1e3, len(times) / (time.perf_counter() - start)


def _hand(spec: dict[str, Any]) -> tuple[Callable[..., Any], Callable[[], Any]]:
    """cancer_screening's steps by hand (HMGET, the scaler, both risk models,
    the average, the argmax), and the scaler's run alone."""
    import numpy as np
    import onnxruntime as ort
    import redis
    from raw_ort import session_options  # bench/raw_ort.py: intra_op_num_threads=1, sequential, ORT_ENABLE_ALL

    models = Path(spec["models"])

    def session(name: str, version: int = 1) -> ort.InferenceSession:
        path = str(models / name / str(version) / "model.onnx")
        return ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])

    scaler, risk1, risk2 = session("cancer_scaler"), session("cancer_risk", 1), session("cancer_risk", 2)
    with (models / "cancer_screening/1/pipeline.toml").open("rb") as toml:
        fields = next(s["features"] for s in tomllib.load(toml)["steps"] if s["name"] == "features")
    store, patients = redis.Redis.from_url(spec["redis"]), itertools.cycle(range(64))

    def features(patient: int) -> Any:
        values: list[bytes] = store.hmget(f"patient:{patient}", fields)  # type: ignore[assignment]
        return np.array([[float(v) for v in values]], dtype=np.float32)

    def by_hand(patient: int | None = None) -> Any:
        scaled = scaler.run(["scaled"], {"input": features(next(patients) if patient is None else patient)})[0]
        one = risk1.run(["probabilities"], {"input": scaled})[0]
        two = risk2.run(["probabilities"], {"input": scaled})[0]
        probabilities = np.stack([one, two]).mean(axis=0)
        return probabilities.argmax(axis=-1), probabilities

    one_row = {"input": features(7)}
    return by_hand, lambda: scaler.run(["scaled"], one_row)


def _raw(spec: dict[str, Any]) -> dict[str, Any]:
    """The text pipeline's work by hand, in this process, and patient 7 by hand."""
    import numpy as np
    import onnxruntime as ort
    from raw_ort import session_options  # bench/raw_ort.py: intra_op_num_threads=1, sequential, ORT_ENABLE_ALL
    from tokenizers import Tokenizer

    models, duration = Path(spec["models"]), spec["duration"]
    by_hand, _ = _hand(spec)
    label, probabilities = by_hand(7)

    def session(name: str, version: int = 1) -> ort.InferenceSession:
        path = str(models / name / str(version) / "model.onnx")
        return ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])

    minilm, names = session("minilm"), ("input_ids", "attention_mask", "token_type_ids")
    tokenizer = Tokenizer.from_file(str(models / "text_embedding/1/tokenizer.json"))
    tokenizer.enable_truncation(128)  # as the pipeline's tokenize step
    tokenizer.enable_padding(pad_to_multiple_of=16)

    def embed(windows: Iterator[list[str]]) -> None:
        encodings = tokenizer.encode_batch(next(windows))
        columns = ([e.ids for e in encodings], [e.attention_mask for e in encodings], [e.type_ids for e in encodings])
        minilm.run(None, {n: np.array(c, dtype=np.int64) for n, c in zip(names, columns, strict=True)})

    text = {}
    for batch in spec["batches"]:  # a window of the sentences, moved on by one each call
        windows = itertools.cycle([(SENTENCES * 2)[i : i + batch] for i in range(len(SENTENCES))])
        text[str(batch)] = _timed(functools.partial(embed, windows), duration)[1] * batch
    patient_7 = {"label": int(label[0]), "probabilities": probabilities[0].tolist()}
    return {"minilm_rows_per_s": text, "patient_7": patient_7}


# ---------------------------------------------------------------- the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _child(core: str, what: str, spec: dict[str, Any]) -> dict[str, Any]:
    argv = ["taskset", "-c", core, PY, __file__, what, json.dumps(spec)]
    done = subprocess.run(argv, env={**os.environ, **THREAD_ENV}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _get(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data), timeout=5) as response:
            return response.status, response.read()
    except OSError as exc:
        return getattr(exc, "code", 0) or 0, b""


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _batch_totals(http: int) -> tuple[float, float]:
    """turnout_batch_size's sum and count for minilm."""
    text = _get(f"http://127.0.0.1:{http}/metrics")[1].decode()
    found = dict(re.findall(r'^turnout_batch_size_(sum|count)\{model="minilm",version="1"\} (\S+)$', text, re.M))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def _round(args: argparse.Namespace, models: Path, redis_url: str, log: Path, number: int) -> dict[str, Any]:
    """One server's points (stopped after), then the same work by hand."""
    http, grpc, state = _free_port(), _free_port(), models.parent / f"state{number}"
    argv = ["taskset", "-c", "0", TURNOUT, "serve", str(models), "--http-port", str(http), "--grpc-port", str(grpc)]
    argv += ["--no-admin", "--no-inference-auth", "--state-dir", str(state), "--log-level", "warning"]
    out: dict[str, Any] = {"points": {}}
    with log.open("ab") as sink:  # its own process group, stopped whole
        env = {**os.environ, **THREAD_ENV}
        server = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _get(f"http://127.0.0.1:{http}/v2/health/ready")[0] != 200 or not _accepts(grpc):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnout serve not ready; see {log}")
            time.sleep(0.2)  # a child's readiness has no event to wait on
        patient = {"inputs": [{"name": "patient_id", "datatype": "BYTES", "shape": [1], "data": ["7"]}]}
        status, body = _get(f"http://127.0.0.1:{http}/v2/models/cancer_screening/versions/1/infer", patient)
        out["patient_7"] = {"status": status, "outputs": json.loads(body or b"{}").get("outputs")}
        out["windows"] = _windows(args, models, redis_url, grpc)
        for key, model, version, kind, concurrency in POINTS:
            before = _batch_totals(http)
            spec = {"grpc": grpc, "model": model, "version": version, "kind": kind, "concurrency": concurrency}
            spec |= {"duration": args.duration, "warmup": args.warmup}
            out["points"][key] = point = _child("1", "_drive", spec)
            _log(f"  {key}: {point['throughput']:,.1f} req/s, p50 {point['latency_ms']['p50']:.3f} ms, "
                 f"errors {point['errors'] or 'none'}")  # fmt: skip
        after = _batch_totals(http)  # the last point's: text_c64
        rows, out["minilm_batches"] = after[0] - before[0], after[1] - before[1]
        out["minilm_mean_batch"] = rows / max(out["minilm_batches"], 1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    out["raw_batch"] = min(RAW_BATCHES, key=lambda b: abs(b - out["minilm_mean_batch"]))
    spec = {"models": str(models), "redis": redis_url, "duration": args.duration, "batches": [out["raw_batch"]]}
    out["raw"] = _child("0", "_raw", spec)
    return out


def _windows(args: argparse.Namespace, models: Path, redis_url: str, grpc: int) -> list[dict[str, float]]:
    """The c=1 terms, one second each in turn, ``args.windows`` times: the
    pipeline and cancer_scaler driven from core 1, the steps by hand and the
    scaler's run on core 0 while the server idles."""
    env = {**os.environ, **THREAD_ENV}
    spec = json.dumps({"models": str(models), "redis": redis_url})
    driver = subprocess.Popen(["taskset", "-c", "1", PY, __file__, "_drive_loop", str(grpc)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    hand = subprocess.Popen(["taskset", "-c", "0", PY, __file__, "_hand_loop", spec], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def ask(child: subprocess.Popen[str], line: str) -> Any:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(line + "\n")
        child.stdin.flush()
        answer = child.stdout.readline()
        if not answer:
            raise RuntimeError(f"a bench child exited (code {child.wait()})")
        return json.loads(answer)

    def p50_us(model: str, version: str, kind: str) -> float:
        result = ask(driver, json.dumps({"model": model, "version": version, "kind": kind, "duration": 1.0}))
        if result["errors"]:
            raise RuntimeError(f"{model} at c=1: {result['errors']}")
        return float(result["latency_ms"]["p50"]) * 1e3

    windows = []
    try:
        ask(hand, "hand 1.0")  # warm both
        p50_us("cancer_screening", "1", "patient")
        for _ in range(args.windows):
            windows.append({
                "pipeline_c1_p50_us": p50_us("cancer_screening", "1", "patient"),
                "scaler_c1_p50_us": p50_us("cancer_scaler", "", "features"),
                "by_hand_p50_us": ask(hand, "hand 1.0"),
                "scaler_run_p50_us": ask(hand, "scaler 1.0"),
            })  # fmt: skip
    finally:
        for child in (driver, hand):
            child.kill()
            child.wait()
    return windows


def _terms(r: dict[str, Any]) -> dict[str, float]:
    """One round's terms and the bars' numbers."""
    p, raw, windows = r["points"], r["raw"], r["windows"]
    for w in windows:
        w["transport_us"] = w["scaler_c1_p50_us"] - w["scaler_run_p50_us"]
        w["left_us"] = w["pipeline_c1_p50_us"] - w["by_hand_p50_us"] - w["transport_us"]
        w["per_step_us"] = w["left_us"] / STEPS
    t = {key: statistics.median(w[key] for w in windows) for key in windows[0]}  # each term's median over windows
    singles = {f"{k}_req_s": p[k]["throughput"] for k in ("scaler_c64", "risk1_c64", "risk2_c64")}
    t |= singles | {"pipeline_c64_req_s": p["pipeline_c64"]["throughput"], "slowest_req_s": min(singles.values())}
    t["pipeline_vs_slowest"] = t["pipeline_c64_req_s"] / t["slowest_req_s"]
    t["combined_req_s"] = 1 / sum(1 / v for v in singles.values())
    t["pipeline_vs_combined"] = t["pipeline_c64_req_s"] / t["combined_req_s"]
    t |= {"text_c64_rows_s": p["text_c64"]["throughput"], "minilm_mean_batch": r["minilm_mean_batch"]}
    t |= {"raw_batch": r["raw_batch"], "raw_rows_s": raw["minilm_rows_per_s"][str(r["raw_batch"])]}
    t["text_vs_raw"] = t["text_c64_rows_s"] / t["raw_rows_s"]
    return t


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _prepare(models: Path, port: int) -> str:
    """The example repository, pointed at a Redis on ``port`` holding the patients; its URL."""
    subprocess.run([PY, str(ROOT / "examples/build_models.py"), str(models)], check=True, capture_output=True)
    url = f"redis://127.0.0.1:{port}/0"
    for toml in models.glob("cancer_screening/*/pipeline.toml"):
        toml.write_text(toml.read_text().replace("redis://127.0.0.1:6379/0", url))
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout != b"PONG\n":
        time.sleep(0.1)
    subprocess.run([PY, str(ROOT / "examples/load_features.py"), url], check=True, capture_output=True)
    return url


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("_drive_loop", "_hand_loop"):  # a child the parent keeps running
        sys.path.insert(0, str(HERE))
        if sys.argv[1] == "_drive_loop":
            _drive_loop(int(sys.argv[2]))
        else:
            _hand_loop(json.loads(sys.argv[2]))
        return
    if len(sys.argv) == 3 and sys.argv[1] in ("_drive", "_raw"):  # a child, pinned by the parent
        sys.path.insert(0, str(HERE))
        spec = json.loads(sys.argv[2])
        if sys.argv[1] == "_raw":
            print(json.dumps(_raw(spec)))
        else:
            import uvloop

            print(json.dumps(uvloop.run(_drive(spec))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each point")
    parser.add_argument("--windows", type=int, default=15, help="c=1 windows a round (4 s each)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turnout-pipeline-bench-") as tmp:
        models, log, port = Path(tmp) / "models", Path(tmp) / "server.log", _free_port()
        redis_argv = ["taskset", "-c", "1", "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        redis = subprocess.Popen([*redis_argv, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            redis_url = _prepare(models, port)
            rounds = []
            for number in range(args.rounds):
                _log(f"round {number + 1}/{args.rounds}")
                rounds.append(_round(args, models, redis_url, log, number))
                _log(f"  by hand: {json.dumps(rounds[-1]['raw'])}")
            server_log = log.read_text()[-3000:]
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    terms = [_terms(r) for r in rounds]
    median = {k: statistics.median(t[k] for t in terms) for k in terms[0]}
    bars = {
        "per-step overhead <= 30 us": median["per_step_us"] <= 30,
        "pipeline c=64 / slowest step >= 0.80": median["pipeline_vs_slowest"] >= 0.80,
        "text rows/s / raw >= 0.80": median["text_vs_raw"] >= 0.80,
    }
    same = [abs(a - b) < 1e-5 for r in rounds for a, b in
            zip(r["patient_7"]["outputs"][1]["data"], r["raw"]["patient_7"]["probabilities"], strict=True)]  # fmt: skip
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout
    commit = head + (" with src/ changes not committed" if dirty else "")
    print(f"command: {shlex.join(['.venv/bin/python', 'bench/pipeline.py', *sys.argv[1:]])}  (turnout at {commit})")
    print(f"patient 7: the pipeline's probabilities {'equal' if all(same) else 'DIFFER FROM'} the hand-run's")
    for key, value in median.items():
        print(f"{key:>22}: {value:11.3f}   rounds: {', '.join(f'{t[key]:.3f}' for t in terms)}")
    for bar, holds in bars.items():
        print(f"{bar:>38}: {'PASS' if holds else 'FAIL'}")
    if args.json:
        document = {"argv": sys.argv[1:], "commit": commit, "median": median, "bars": bars, "terms": terms}
        args.json.write_text(json.dumps(document | {"rounds": rounds, "server_log_tail": server_log}, indent=1) + "\n")


if __name__ == "__main__":
    main()
