"""turnout: a model server for the KServe Open Inference Protocol (V2)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ModelContext", "PythonModel", "Tensor", "__version__"]


def __getattr__(name: str) -> Any:
    """``from turnout import PythonModel, Tensor, ModelContext``: what a Python
    model's ``model.py`` needs, imported only when asked for."""
    if name in ("ModelContext", "PythonModel", "Tensor"):
        from turnout.model.runtimes import python

        return getattr(python, name)
    raise AttributeError(f"module 'turnout' has no attribute {name!r}")
