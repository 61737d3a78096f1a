"""Overload protection at the door: admission control (``gate``) and the
global budget for request bodies held in memory (``budget``)."""
