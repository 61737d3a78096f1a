"""Metrics (and, later, traces, logs and drift): leaves that any layer may call."""
