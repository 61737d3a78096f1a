"""The connection table: the longest idle goes first, busy ones never."""

from __future__ import annotations

import pytest

from turnout.overload.connections import Connections


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return self.name


def test_a_full_table_closes_the_longest_idle_and_never_a_busy_one() -> None:
    table = Connections(3)
    a, b, c, d = Conn("a"), Conn("b"), Conn("c"), Conn("d")
    for conn in (a, b, c):
        assert table.open(conn)
    table.busy(a)  # the protocols' call-free idiom, as on every request's path:
    table.idle.pop(b, None)  # b busy
    table.idle[b] = None  # b idle again: now the newest idle, behind c
    assert table.open(d)
    assert (a.closed, b.closed, c.closed) == (False, False, True)
    assert len(table) == 3
    table.closed(c)  # its connection_lost, later: counted once
    assert len(table) == 3


def test_refused_when_every_connection_is_busy() -> None:
    table = Connections(2)
    a, b = Conn("a"), Conn("b")
    assert table.open(a) and table.open(b)
    table.busy(a)
    table.busy(b)
    assert not table.open(Conn("c"))
    table.idle_again(b)
    assert table.open(Conn("c")) and b.closed


def test_a_closed_connection_is_not_made_idle_again() -> None:
    table = Connections(1)
    a = Conn("a")
    assert table.open(a)
    table.busy(a)
    table.closed(a)
    table.idle_again(a)  # an answer finishing after the connection was lost
    assert len(table) == 0 and not table.idle
    assert table.open(Conn("b"))


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Connections(0)
