"""An MLflow pyfunc model as a turnout Python model.

A model logged only as ``python_function`` (``mlflow.pyfunc.log_model`` with
a ``PythonModel``, or models from code) is code: loading it unpickles or runs
what its author wrote. The MLflow source pulls such a version as a Python
model (``runtime = "python"``): the MLflow model in ``mlflow_model/`` and a
``model.py`` whose class is :class:`MlflowPyfunc`. Like every Python model it
loads only with ``trusted = true`` in ``model.toml`` on a server run with
``--allow-trusted-models``, in a worker process by default.

The signature is the one logged with the model (``signature=`` or
``infer_signature``), unless ``model.toml`` declares one:

- a tensor-based schema serves its tensors as they are named (an unnamed
  one as ``input``, or ``output``), datatypes and shapes as logged;
- a column-based schema serves one tensor per column, shape ``[-1]``
  (``string`` as BYTES, decoded to ``str``); the model gets a pandas
  DataFrame of them, as MLflow's own server would give it.

``predict``'s answer becomes the outputs by name: a DataFrame's columns, a
dict's keys, or one array (or Series, or list) as the only output
(``output`` when the model was logged without an output schema; then
``model.toml`` declares the signature).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from turnout.model.runtimes.python import ModelContext, PythonModel, Tensor
from turnout.model.signature import TensorSpec

MLFLOW_MODEL = "mlflow_model"  # the pulled MLflow model's directory, beside model.py

#: MLflow's column types (``DataType`` names) as V2 datatypes
_COLUMN_DATATYPES = {
    "double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32",
    "boolean": "BOOL", "string": "BYTES", "binary": "BYTES",
}  # fmt: skip
_NUMPY_DATATYPES = {
    "float64": "FP64", "float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32",
    "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL", "object": "BYTES", "str": "BYTES",
}  # fmt: skip


class MlflowPyfunc(PythonModel):
    """Serves ``mlflow_model/`` beside it with ``mlflow.pyfunc.load_model``."""

    def load(self, context: ModelContext) -> None:
        try:
            import mlflow.pyfunc
        except ImportError:
            raise RuntimeError("an MLflow pyfunc model needs mlflow: pip install 'turnout[mlflow]'") from None
        self._pyfunc = mlflow.pyfunc.load_model(str(context.version_dir / MLFLOW_MODEL))
        metadata = self._pyfunc.metadata
        given, answered = metadata.get_input_schema(), metadata.get_output_schema()
        self._columns: dict[str, str] | None = None  # column name -> MLflow type, for a column-based schema
        if given is not None:
            if given.is_tensor_spec():
                self.inputs = tuple(_tensor(spec, "input") for spec in given.inputs)  # type: ignore[misc]
            else:
                self._columns = {spec.name: str(spec.type.name) for spec in given.inputs}
                self.inputs = tuple(_column(spec) for spec in given.inputs)  # type: ignore[misc]
        if answered is not None:
            if answered.is_tensor_spec():
                self.outputs = tuple(_tensor(spec, "output") for spec in answered.inputs)  # type: ignore[misc]
            else:
                self.outputs = tuple(_column(spec) for spec in answered.inputs)  # type: ignore[misc]
        self._output_names = [spec.name for spec in self.outputs] or ["output"]  # else model.toml declares it

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]], parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        answer = self._pyfunc.predict(self._given(inputs))
        return _named(answer, self._output_names)

    def _given(self, inputs: dict[str, np.ndarray[Any, Any]]) -> Any:
        if self._columns is not None:
            import pandas as pd  # mlflow's own dependency

            columns = {
                name: [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in inputs[name].reshape(-1)]
                if kind == "string"
                else inputs[name].reshape(-1)
                for name, kind in self._columns.items()
            }
            return pd.DataFrame(columns)
        if len(inputs) == 1 and [spec.name for spec in self.inputs] == ["input"]:
            return next(iter(inputs.values()))  # one unnamed tensor: the array itself, as it was logged
        return dict(inputs)


def _tensor(spec: Any, unnamed: str) -> TensorSpec:
    datatype = _NUMPY_DATATYPES.get(np.dtype(spec.type).name)
    if datatype is None:
        raise ValueError(f"the logged signature's {spec.name or unnamed} is {spec.type}, which V2 cannot carry")
    return Tensor(spec.name or unnamed, datatype, [int(d) for d in spec.shape])


def _column(spec: Any) -> TensorSpec:
    datatype = _COLUMN_DATATYPES.get(str(spec.type.name))
    if datatype is None or spec.name is None:
        raise ValueError(f"the logged signature's column {spec.name!r} is {spec.type}, which V2 cannot carry")
    return Tensor(spec.name, datatype, [-1])


def _named(answer: Any, names: list[str]) -> Mapping[str, Any]:
    if hasattr(answer, "columns"):  # a DataFrame
        if len(names) == 1 and names[0] not in answer.columns and len(answer.columns) == 1:
            return {names[0]: answer.iloc[:, 0].to_numpy()}
        return {name: answer[name].to_numpy() for name in answer.columns}
    if isinstance(answer, Mapping):
        return answer
    if len(names) != 1:
        raise ValueError(f"predict returned one {type(answer).__name__} for {len(names)} outputs {names}")
    return {names[0]: np.asarray(answer)}
