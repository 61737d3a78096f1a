"""Argument types the command-line modules share: each turns a flag's text
into its value, or tells argparse in one line why it cannot."""

from __future__ import annotations

import argparse
import math

from turnout.security.ratelimit import Rate


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


def port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def share(text: str) -> float:
    """A fraction from 0 to 1 (a sampling share)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share from 0 to 1")
    return value


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a header: 'NAME: VALUE'")
    return name.strip(), value.strip()


def rate(text: str) -> Rate:
    rate_text, _, burst_text = text.partition("/")
    try:
        per_second = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, math.ceil(per_second))
        return Rate(per_second, burst)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: requests per second, optionally /burst (e.g. 50 or 50/100)"
        ) from None


def rate_text(value: Rate) -> str:
    return f"{value.per_second:g}/{value.burst}"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(text: str) -> int:
    """Bytes: 1500000, 512M, 2G (powers of 1024; a trailing B or iB is allowed)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1500000, 512M, 2G)") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size of at least one byte")
    return int(value)


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):  # a variable set empty: off
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
