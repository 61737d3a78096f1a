"""``turnout profile``: the reference profile of a model version, from the
data it was trained on (CSV with a header row, NPY, or Parquet with pandas),
written beside the version as profile.json for drift detection."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

from turnout.observability.drift import PROFILE_FILE, make_profile


def add_command(commands: Any) -> None:
    profile = commands.add_parser("profile", help="make a model version's reference profile for drift detection")
    profile.add_argument("model")
    profile.add_argument("--repo", type=Path, required=True, help="the model repository")
    profile.add_argument("--data", type=Path, required=True, help="reference rows: .csv (header row), .npy, .parquet")
    profile.add_argument("--version", type=int, default=None, help="the version (default: the highest on disk)")
    profile.add_argument("--output", default=None, help="the output whose distribution is profiled (default: first)")
    profile.set_defaults(run=run)


def read_rows(path: Path) -> tuple[np.ndarray[Any, Any], tuple[str, ...] | None]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False).astype(np.float32), None
    if suffix == ".csv":
        with path.open(newline="") as file:
            header = next(csv.reader(file))
        return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2), tuple(header)
    if suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        return frame.to_numpy(dtype=np.float32), tuple(str(c) for c in frame.columns)
    raise ValueError(f"{path}: a .csv (with a header row), .npy or .parquet file")


def run(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    model_dir = args.repo / args.model
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    version = args.version if args.version is not None else (versions[-1] if versions else None)
    if version is None or version not in versions:
        print(f"turnout profile: {model_dir} has no version {version}", file=sys.stderr)
        return 2
    try:
        rows, features = read_rows(args.data)
    except (OSError, ValueError) as exc:
        print(f"turnout profile: {exc}", file=sys.stderr)
        return 2
    session = ort.InferenceSession(str(model_dir / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        print("turnout profile: only tabular models (one rows x features input) are profiled", file=sys.stderr)
        return 2
    output = args.output or session.get_outputs()[0].name
    predictions = session.run([output], {inputs[0].name: rows})[0]
    profile = make_profile(rows, np.asarray(predictions), inputs[0].name, output, features)
    target = model_dir / str(version) / PROFILE_FILE
    profile.save(target)
    print(f"wrote {target}: {len(rows)} rows, {len(profile.features)} features, predictions of '{output}'")
    return 0
