"""The figures of `turnout optimize` (issue 22), one run each.

    .venv/bin/python bench/optimize.py [--json OUT.json]

In a temporary copy of the example models, with examples/optimize_data.py's sets:

1. MiniLM int8 static (200 calibration sentences, 1,000 held out): raw rows/s
   at batch 32 over the fp32 version (bar >= 1.5x), mean cosine similarity
   of the embeddings (bar >= 0.98).
2. The examples' scikit-learn MLP (cancer_risk version 2: 30 -> 32 -> 1)
   pruned to half its hidden units: rows/s at batch 32 (bar >= 1.5x),
   accuracy on its test split (bar: within 1 point).
3. For scale, not a bar: the same pruning on a wider tabular MLP trained here
   (scikit-learn's digits, 64 -> 512 -> 512 -> 10), where the arithmetic, not
   ONNX Runtime's per-call cost, is most of a call.

The report's timing: ONNX Runtime alone, one thread, the two versions timed
in turns (five rounds, medians): turnout/optimize/report.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import build_models  # noqa: E402
import optimize_data  # noqa: E402

from turnout.optimize import samples  # noqa: E402
from turnout.optimize.version import Plan, optimize, source_of  # noqa: E402


def run(repo: Path, model: str, version: int, plan: Plan, validation: Path, calibration: Path | None) -> Any:
    source = source_of(repo, model, version)
    checked = samples.read(validation, source.signature)
    calibrated = samples.read(calibration, source.signature) if calibration is not None else None
    report = optimize(source, None, plan, checked, calibrated, None)
    print(report.text(), flush=True)
    return report


def digits_mlp(repo: Path, data: Path) -> None:
    """A wider tabular MLP: scikit-learn's digits (64 features), 512 -> 512 hidden units."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    model = MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=300, random_state=0).fit(x_train, y_train)
    onnx_model = to_onnx(model, initial_types=[("input", FloatTensorType([None, 64]))],
                         options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})  # fmt: skip
    (repo / "digits_mlp" / "1").mkdir(parents=True)
    (repo / "digits_mlp" / "1" / "model.onnx").write_bytes(onnx_model.SerializeToString())
    np.save(data / "digits_train.npy", x_train)
    np.savez(data / "digits_test.npz", input=x_test, label=y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="turnout-optimize-") as temp:
        repo, data = Path(temp) / "models", Path(temp) / "data"
        build_models.build(repo, text=True)
        optimize_data.write(data)
        digits_mlp(repo, data)
        minilm = run(repo, "minilm", 1, Plan(int8="static"), data / "minilm_validation.npz",
                     data / "minilm_calibration.npz")  # fmt: skip
        pruned = run(repo, "cancer_risk", 2, Plan(prune=0.5), data / "cancer_test.npz", data / "cancer_train.npy")
        wide = run(repo, "digits_mlp", 1, Plan(prune=0.5), data / "digits_test.npz", data / "digits_train.npy")
        shutil.rmtree(repo)
    for name, report in (("minilm_int8_static", minilm), ("cancer_mlp_pruned", pruned), ("digits_mlp_pruned", wide)):
        speeds = report.rows_per_second["batch 32"]
        figures[name] = {"batch32_ratio": speeds["optimized"] / speeds["source"], "agreement": report.agreement,
                         "task_metric": report.task_metric, "report": report.as_dict()}  # fmt: skip
    m, p, w = figures["minilm_int8_static"], figures["cancer_mlp_pruned"], figures["digits_mlp_pruned"]
    print(f"MiniLM int8 static: {m['batch32_ratio']:.2f}x rows/s at batch 32 (bar >= 1.5), mean cosine "
          f"{m['agreement']:.4f} (bar >= 0.98)")  # fmt: skip
    for label, found in (("examples' MLP (cancer_risk 2)", p), ("digits MLP 512x512", w)):
        metric = found["task_metric"]
        print(f"{label} pruned to half: {found['batch32_ratio']:.2f}x rows/s at batch 32 (bar >= 1.5); accuracy "
              f"{metric['source']:.4f} -> {metric['optimized']:.4f} (bar: within 0.01)")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
