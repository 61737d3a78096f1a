"""The pure and file-level parts of the model lifecycle: when a repository
change has settled, artifact checksums, fingerprints, and the pin store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from turnout.model.fingerprint import model_digest, scan
from turnout.model.integrity import IntegrityError, verify
from turnout.model.watcher import Changes, settled_changes
from turnout.serving.pins import PinStore
from turnout.serving.residency import Budget, Residency


def test_a_change_is_acted_on_once_two_scans_agree() -> None:
    applied = {"a": "1", "b": "1", "gone": "1"}
    first = {"a": "2", "b": "1", "new": "1"}  # a changed, gone vanished, new appeared: not yet settled
    assert settled_changes(applied, applied, first) == Changes((), ())
    assert settled_changes(applied, first, first) == Changes(("a", "new"), ("gone",))
    copying = {"a": "3", "b": "1", "new": "1"}  # still being written: a's digest moved again
    assert settled_changes(applied, first, copying) == Changes(("new",), ("gone",))


def test_checksums_from_model_toml_or_a_file_beside(tmp_path: Path) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    right = hashlib.sha256(b"weights").hexdigest()
    verify(artifact, None)  # nothing to check against
    verify(artifact, right.upper())
    with pytest.raises(IntegrityError, match="does not match the expected"):
        verify(artifact, "0" * 64)
    (tmp_path / "model.onnx.sha256").write_text(f"{right}  model.onnx\n")
    verify(artifact, None)
    artifact.write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match=f"does not match the expected {right}"):
        verify(artifact, None)
    (tmp_path / "model.onnx.sha256").write_text("not a digest\n")
    with pytest.raises(IntegrityError, match="does not start with a sha256"):
        verify(artifact, None)


def test_fingerprints_see_new_changed_and_removed_files(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"a")
    (tmp_path / ".hidden").mkdir()
    first = model_digest(model)
    assert scan(tmp_path) == {"m": first}
    (model / "model.toml").write_text("warmup = false\n")
    second = model_digest(model)
    (model / "2").mkdir()
    (model / "2" / "model.onnx").write_bytes(b"b")
    third = model_digest(model)
    os.utime(model / "2" / "model.onnx", ns=(1, 1))
    fourth = model_digest(model)
    assert len({first, second, third, fourth}) == 4


def test_pins_and_earlier_defaults_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "pins.json"
    pins = PinStore(path)
    pins.pin("m", 3)
    for previous in (1, 2, 2, 5):
        pins.default_changed("m", previous)
    reopened = PinStore(path)
    assert reopened.pinned("m") == 3
    assert reopened.history("m") == [1, 2, 5]  # a repeat is not a change
    reopened.set_history("m", reopened.history("m")[:-1])
    reopened.unpin("m")
    again = PinStore(path)
    assert again.pinned("m") is None and again.history("m") == [1, 2]
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["pins.json"]  # no temporary file left


def test_the_least_recently_used_models_leave_to_keep_the_budget() -> None:
    residency = Residency(Budget(max_models=2))
    residency.loaded("a", 100, 0.0)
    residency.loaded("b", 100, 1.0)
    residency.used("a", 2.0)  # b is now the least recently used
    residency.loaded("c", 100, 3.0)
    assert residency.to_evict(keep="c") == ["b"]
    residency.unloaded("b")
    assert residency.to_evict(keep="c") == []
    by_bytes = Residency(Budget(max_bytes=250))
    for name, size in (("a", 100), ("b", 100), ("c", 100)):
        by_bytes.loaded(name, size, 0.0)
    assert by_bytes.to_evict(keep="c") == ["a"]
    assert by_bytes.to_evict(keep="a") == ["b"]  # the one just loaded never leaves for itself
    assert by_bytes.fits(250) and not by_bytes.fits(251)


def test_models_unused_for_the_idle_time_are_idle() -> None:
    residency = Residency(Budget(idle_seconds=10.0))
    residency.loaded("a", 1, 0.0)
    residency.loaded("b", 1, 0.0)
    residency.used("b", 5.0)
    assert residency.idle(9.0) == []
    assert residency.idle(12.0) == ["a"]
    assert Residency(Budget()).idle(1e9) == []  # no idle time: never
