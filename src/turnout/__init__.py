"""turnout: a model server for the KServe Open Inference Protocol (V2)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
