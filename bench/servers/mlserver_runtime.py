"""An ONNX Runtime custom runtime for MLServer, written the way its users write one.

model-settings.json points at it with ``"implementation": "mlserver_runtime.OnnxRuntimeModel"``
(this directory on PYTHONPATH) and ``"parameters": {"uri": "./model.onnx"}``. It
follows MLServer's custom-runtime guide: ``load`` opens the session, ``predict``
decodes each input with ``NumpyCodec``, runs the session and encodes each output
back. Adaptive batching, when model-settings.json enables it, is MLServer's own:
it merges requests before ``predict`` and splits the response after.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        model_uri = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(model_uri, options, providers=["CPUExecutionProvider"])
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {request_input.name: NumpyCodec.decode_input(request_input) for request_input in payload.inputs}
        results = self._session.run(self._output_names, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name=name, payload=result)
                for name, result in zip(self._output_names, results, strict=True)
            ],
        )
