"""API keys: hashed at rest, checked in constant time, revoked without a
restart, in both stores (a JSON file and SQLite)."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from turnout.security import keys
from turnout.security.keys import FileKeys, KeyStore, SqliteKeys, new_key, open_backend, revoke, split_token
from turnout.security.principal import Role


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["keys.json", "keys.db"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return tmp_path / request.param


def test_a_created_key_authenticates_and_names_its_roles_and_models(store_path: Path) -> None:
    backend = open_backend(store_path)
    record, token = new_key("fraud-app", [Role.INFER], ["fraud"], rate=5.0, burst=10)
    backend.add(record)
    store = KeyStore(open_backend(store_path))
    found = store.lookup(token)
    assert found is not None
    principal = found.principal()
    assert (principal.name, principal.roles, principal.models) == ("fraud-app", {Role.INFER}, {"fraud"})
    assert (found.rate, found.burst) == (5.0, 10)


def test_the_secret_is_never_stored(store_path: Path) -> None:
    backend = open_backend(store_path)
    record, token = new_key("app", [Role.INFER])
    backend.add(record)
    secret = split_token(token)[1]  # type: ignore[index]
    assert secret not in store_path.read_bytes().decode("latin-1")
    assert secret not in repr(record) and secret not in json.dumps(record.public())
    assert "digest" not in record.public() and "salt" not in record.public()
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: "tnt_000000000000_" + t.split("_", 2)[2],  # unknown id
        lambda t: t.replace("tnt_", "tnx_"),
        lambda t: "tnt__",
        lambda t: "",
    ],
)
def test_a_wrong_key_is_refused(store_path: Path, mangle: object) -> None:
    backend = open_backend(store_path)
    record, token = new_key("app", [Role.INFER])
    backend.add(record)
    store = KeyStore(backend)
    assert store.lookup(mangle(token)) is None  # type: ignore[operator]
    assert store.lookup(token) is not None


def test_revocation_by_another_process_takes_effect_within_the_refresh_interval(store_path: Path) -> None:
    record, token = new_key("app", [Role.INFER])
    open_backend(store_path).add(record)
    clock = Clock()
    store = KeyStore(open_backend(store_path), refresh_seconds=1.0, clock=clock)  # the server's view
    assert store.lookup(token) is not None
    revoke(open_backend(store_path), record.id)  # `turnout keys revoke`, another connection
    clock.now = 0.5
    assert store.lookup(token) is not None  # not looked at yet
    clock.now = 1.0
    assert store.lookup(token) is None


def test_a_proven_token_is_not_hashed_again_until_the_keys_reload(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, token = new_key("app", [Role.INFER])
    open_backend(store_path).add(record)
    clock = Clock()
    store = KeyStore(open_backend(store_path), refresh_seconds=1.0, clock=clock)
    hashed = []
    real = keys.matches
    monkeypatch.setattr(keys, "matches", lambda r, secret: hashed.append(r.id) or real(r, secret))
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for _ in range(3):
        assert store.lookup(token) is not None
        assert store.lookup(wrong) is None  # a wrong secret is never remembered: hashed every time
    assert len(hashed) == 1 + 3
    revoke(open_backend(store_path), record.id)
    clock.now = 1.0
    assert store.lookup(token) is None  # the reload forgot what was proven


def test_a_key_created_while_the_server_runs_is_accepted_without_a_restart(store_path: Path) -> None:
    clock = Clock()
    store = KeyStore(open_backend(store_path), refresh_seconds=1.0, clock=clock)
    record, token = new_key("late", [Role.READ])
    open_backend(store_path).add(record)
    clock.now = 1.0
    assert store.lookup(token) is not None


def test_revoke_by_name_and_refusals(tmp_path: Path) -> None:
    backend = FileKeys(tmp_path / "keys.json")
    first, _ = new_key("twin", [Role.INFER])
    second, _ = new_key("twin", [Role.INFER])
    single, _ = new_key("single", [Role.INFER])
    for record in (first, second, single):
        backend.add(record)
    assert revoke(backend, "single").revoked is not None
    with pytest.raises(LookupError, match="2 keys are named 'twin'; revoke by id"):
        revoke(backend, "twin")
    with pytest.raises(LookupError, match="no key with id or name 'ghost'"):
        revoke(backend, "ghost")
    assert revoke(backend, first.id).revoked is not None
    assert [r.revoked is not None for r in backend.load()] == [True, False, True]


def test_a_broken_store_keeps_the_keys_loaded_before(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    record, token = new_key("app", [Role.INFER])
    FileKeys(path).add(record)
    clock = Clock()
    store = KeyStore(FileKeys(path), clock=clock)
    path.write_text("{ half a file")
    clock.now = 5.0
    assert store.lookup(token) is not None


def test_malformed_stores_are_refused_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"version": 1, "keys": [{"id": "x"}]}))
    with pytest.raises(ValueError, match=r"keys\.json: a key record is malformed"):
        FileKeys(path).load()
    path.write_text(json.dumps({"keys": []}))
    with pytest.raises(ValueError, match="not a turnout keys file"):
        FileKeys(path).load()
    with pytest.raises(ValueError, match=r"a key store is a \.json file or a SQLite"):
        open_backend(tmp_path / "keys.txt")


def test_the_sqlite_store_is_a_plain_database(tmp_path: Path) -> None:
    """Other tools (backups, an admin UI) can read it; a record is one JSON row."""
    path = tmp_path / "keys.sqlite"
    record, _ = new_key("app", [Role.ADMIN])
    SqliteKeys(path).add(record)
    rows = sqlite3.connect(path).execute("SELECT id, record FROM keys").fetchall()
    assert rows[0][0] == record.id
    assert json.loads(rows[0][1])["roles"] == ["admin"]
