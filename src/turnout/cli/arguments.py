"""Argument types the command-line modules share: each turns a flag's text
into its value, or tells argparse in one line why it cannot."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def seconds(text: str) -> float:
    """A duration that may be zero (no wait)."""
    return _duration(text, allow_zero=True)


def positive_seconds(text: str) -> float:
    """A duration that must pass: a timeout of zero would refuse everything."""
    return _duration(text, allow_zero=False)


def _duration(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds {bound}")
    return value
