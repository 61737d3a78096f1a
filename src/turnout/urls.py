"""URLs as messages show them."""

from __future__ import annotations


def without_password(url: str) -> str:
    """A URL as shown in errors and logs: never its credentials (all up to the
    last '@', so a password holding an unescaped '@' does not leak either)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"
