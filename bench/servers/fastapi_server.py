"""A hand-written FastAPI + uvicorn + ONNX Runtime server: the V2 infer route only.

    python bench/servers/fastapi_server.py REPO [--host 127.0.0.1] [--port 8000]

The baseline a competent engineer writes in an afternoon: pydantic models for the
request, numpy for the tensors, ``session.run`` inline in the handler (on one
core a thread pool only adds hand-offs), uvloop + httptools, no access log.
REPO is a turnout-layout repository: ``REPO/<name>/1/model.onnx``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
V2_TYPES = {np.dtype(v): k for k, v in DTYPES.items()}


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class RequestOutput(BaseModel):
    name: str


class InferenceRequest(BaseModel):
    id: str | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


def load_sessions(repo: Path) -> dict[str, ort.InferenceSession]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return {
        path.parent.parent.name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for path in sorted(repo.glob("*/1/model.onnx"))
    }


def create_app(sessions: dict[str, ort.InferenceSession]) -> FastAPI:
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> dict[str, Any]:
        if name not in sessions:
            raise HTTPException(404, f"model {name} not found")
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: InferenceRequest) -> JSONResponse:
        session = sessions.get(name)
        if session is None:
            raise HTTPException(404, f"model {name} not found")
        try:
            feeds = {i.name: np.asarray(i.data, dtype=DTYPES[i.datatype]).reshape(i.shape) for i in request.inputs}
        except (KeyError, ValueError) as exc:
            raise HTTPException(400, f"bad input: {exc}") from exc
        wanted = [o.name for o in request.outputs] if request.outputs else None
        names = wanted or [o.name for o in session.get_outputs()]
        results = session.run(wanted, feeds)
        outputs = [
            {"name": n, "datatype": V2_TYPES[r.dtype], "shape": list(r.shape), "data": r.ravel().tolist()}
            for n, r in zip(names, results, strict=True)
        ]
        body: dict[str, Any] = {"model_name": name, "outputs": outputs}
        if request.id is not None:
            body["id"] = request.id
        return JSONResponse(body)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = create_app(load_sessions(args.repo))
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False)


if __name__ == "__main__":
    main()
