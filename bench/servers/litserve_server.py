"""The benchmark's two custom Python models served by LitServe, as a LitServe
user writes a ``LitAPI``: ``setup`` loads, ``decode_request`` takes one V2
request's row, ``predict`` runs a batch (LitServe's batching: ``max_batch_size``
and ``batch_timeout``), ``encode_response`` answers V2 JSON, at the V2 path so
the same load generator and request file measure it.

    python litserve_server.py MODEL_DIR --model logreg|xgb --port 8080
"""

from __future__ import annotations

import argparse
from pathlib import Path

import litserve as ls
import numpy as np


class ProbabilityAPI(ls.LitAPI):
    def __init__(self, model: str, directory: Path, max_batch_size: int, batch_timeout: float) -> None:
        path = f"/v2/models/{model}/infer"
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=path)
        self.model, self.directory = model, directory

    def setup(self, device: str) -> None:
        if self.model == "logreg":
            weights = np.load(self.directory / "weights.npz")
            coef, intercept = weights["coef"], weights["intercept"]
            self.run = lambda x: 1.0 / (1.0 + np.exp(-(x @ coef + intercept)))
        else:
            import xgboost

            booster = xgboost.Booster(model_file=str(self.directory / "model.json"))
            booster.set_param({"nthread": 1})
            self.run = booster.inplace_predict

    def decode_request(self, request: dict) -> np.ndarray:
        tensor = request["inputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])[0]

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(x), dtype=np.float32)

    def unbatch(self, output: np.ndarray) -> list[float]:
        return output.tolist()

    def encode_response(self, probability: float) -> dict:
        return {
            "model_name": self.model,
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [1], "data": [probability]}],
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout", type=float, default=0.001)
    parser.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ queue to its workers")
    args = parser.parse_args()
    api = ProbabilityAPI(args.model, args.directory, args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=args.fast_queue)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
