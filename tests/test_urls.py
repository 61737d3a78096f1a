"""URLs shown in messages never carry their credentials."""

from __future__ import annotations

from turnout.urls import without_password


def test_credentials_never_show_even_with_an_unescaped_at_in_the_password() -> None:
    assert without_password("redis://ops:s3cret@10.0.0.5:6379/0") == "redis://10.0.0.5:6379/0"
    assert without_password("rediss://:p@ss@redis:6380") == "rediss://redis:6380"
    assert without_password("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"
    assert without_password("unix:///run/redis.sock") == "unix:///run/redis.sock"
