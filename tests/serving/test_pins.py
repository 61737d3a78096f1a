"""PinStore's sharing (``--state redis://``, serving/shared_pins.py): a pin is
announced before it is made, and one Redis refused is not made; a pin taken
up from another replica is not announced again (old news re-announced by a
slower replica could overwrite a newer pin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.errors import Unavailable
from turnout.serving.pins import PinStore


def test_a_pin_is_announced_before_it_is_made_and_not_made_when_refused(tmp_path: Path) -> None:
    announced: list[tuple[str, int | None]] = []
    refuse = [False]

    def announce(model: str, version: int | None) -> None:
        if refuse[0]:
            raise Unavailable("Redis is gone")
        announced.append((model, version))

    pins = PinStore(tmp_path / "pins.json", announce)
    pins.pin("wine", 1)
    assert announced == [("wine", 1)] and pins.pinned("wine") == 1
    refuse[0] = True
    with pytest.raises(Unavailable):
        pins.pin("wine", 2)
    assert pins.pinned("wine") == 1 and PinStore(tmp_path / "pins.json").pinned("wine") == 1  # neither here nor saved
    refuse[0] = False
    pins.unpin("wine")
    assert announced == [("wine", 1), ("wine", None)] and pins.pinned("wine") is None


def test_a_pin_taken_up_from_another_replica_is_not_announced_again_but_an_operators_always_is(
    tmp_path: Path,
) -> None:
    announced: list[tuple[str, int | None]] = []
    pins = PinStore(tmp_path / "pins.json", lambda model, version: announced.append((model, version)))
    pins.pin("wine", 3, announce=False)
    pins.unpin("wine", announce=False)
    pins.pin("wine", 3)
    pins.pin("wine", 3)  # unchanged here, announced all the same: another replica may have pinned since
    assert announced == [("wine", 3), ("wine", 3)]
