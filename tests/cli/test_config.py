"""One configuration from three places: a TOML file, TURNOUT_... environment
variables and flags, each overriding the one before; errors name the file and
the key; ``turnout config`` says where every value came from, secrets masked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from turnout.cli.main import _parser
from turnout.cli.options import OptionError
from turnout.cli.serve import resolved, settings_from
from turnout.settings import Settings

FILE = """\
repository = "models"

[http]
port = 9100

[grpc]
host = "0.0.0.0"

[admin]
enabled = false

[routing]
shadow_log_every = 7
rollout_tick = 0.5

[streams]
url = "redis://:hunter2@localhost:6379/0"
block = 2.5

[observability]
service_name = "fraud-api"
trace_sample = 0.25

[security]
rate_limit = "50/100"

[lifecycle]
mlflow_models = ["models:/fraud@champion"]
registry = "mlflow"

[limits]
max_connections = 100

[limits.admission]
enabled = false

[limits.http2]
resets_per_second = 5.0
"""


def settings(
    tmp_path: Path, *argv: str, env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name in [n for n in __import__("os").environ if n.startswith("TURNOUT_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    args = _parser().parse_args(["serve", *argv])
    return settings_from(resolved(args).values)


def test_the_file_sets_every_section_even_what_no_flag_reaches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "turnout.toml").write_text(FILE)
    got = settings(tmp_path, "--config", str(tmp_path / "turnout.toml"), monkeypatch=monkeypatch)
    assert got.repository == Path("models")
    assert (got.http.port, got.http.host, got.grpc.host, got.grpc.port) == (9100, "127.0.0.1", "0.0.0.0", 8081)
    assert got.admin.port is None
    assert (got.routing.shadow_log_every, got.routing.rollout_tick_seconds) == (7, 0.5)
    assert (got.stream.url, got.stream.block_seconds) == ("redis://:hunter2@localhost:6379/0", 2.5)
    assert (got.tracing.service_name, got.tracing.sample_ratio) == ("fraud-api", 0.25)
    assert got.security.rate_limit is not None and got.security.rate_limit.burst == 100
    assert got.lifecycle.mlflow_models == ("models:/fraud@champion",)
    assert got.edge.admission.enabled is False and got.edge.max_connections == 100
    assert got.edge.http2.resets_per_second == 5.0
    assert got.edge.http2.reset_burst == 1000  # untouched fields keep their defaults


def test_environment_overrides_the_file_and_flags_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "turnout.toml").write_text(FILE)
    env = {"TURNOUT_CONFIG": str(tmp_path / "turnout.toml"), "TURNOUT_HTTP_PORT": "9200",
           "TURNOUT_ADMIN_ENABLED": "true", "TURNOUT_LIMITS_HTTP2_RESETS_PER_SECOND": "7"}  # fmt: skip
    got = settings(tmp_path, env=env, monkeypatch=monkeypatch)
    assert (got.http.port, got.admin.port, got.edge.http2.resets_per_second) == (9200, 8082, 7.0)
    got = settings(tmp_path, "elsewhere", "--http-port", "9300", "--no-admin", env=env, monkeypatch=monkeypatch)
    assert (got.repository, got.http.port, got.admin.port) == (Path("elsewhere"), 9300, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[http]\nprot = 1\n", r"turnout.toml: http.prot: unknown setting"),
        ("[htp]\nport = 1\n", r"turnout.toml: \[htp\]: unknown section"),
        ("[http]\nport = 70000\n", r"turnout.toml: http.port: '70000' is not a port number"),
        ("[admin]\nenabled = 1\n", r"turnout.toml: admin.enabled: must be true or false"),
        ("[observability]\nlog_level = 'loud'\n", r"observability.log_level: 'loud' is not one of"),
        ("[limits.http2]\nreset_burst = 0\n", r"limits.http2.reset_burst: '0' is not a positive whole number"),
        ("[http\n", r"turnout.toml: not valid TOML"),
    ],
)
def test_a_wrong_file_names_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    (tmp_path / "turnout.toml").write_text(text)
    with pytest.raises(OptionError, match=message):
        settings(tmp_path, "models", "--config", str(tmp_path / "turnout.toml"), monkeypatch=monkeypatch)


def test_a_wrong_environment_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OptionError, match="environment TURNOUT_GRPC_PORT: 'eighty' is not a port number"):
        settings(tmp_path, "models", env={"TURNOUT_GRPC_PORT": "eighty"}, monkeypatch=monkeypatch)


def test_turnout_config_prints_values_with_their_sources_and_masks_secrets(tmp_path: Path) -> None:
    (tmp_path / "turnout.toml").write_text(FILE)
    env = {"PATH": "/usr/bin:/bin", "TURNOUT_HTTP_PORT": "9200"}
    shown = subprocess.run(
        [sys.executable, "-m", "turnout", "config", "--config", "turnout.toml", "--grpc-port", "9201"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = {line.split("#")[0].strip(): line.rsplit("#", 1)[1].strip() for line in shown.splitlines() if "=" in line}
    assert lines['repository = "models"'] == "file turnout.toml"
    assert lines["port = 9200"] == "environment TURNOUT_HTTP_PORT"
    assert lines["port = 9201"] == "flag --grpc-port"
    assert lines["port = 8082"] == "default"
    assert lines['url = "redis://***@localhost:6379/0"'] == "file turnout.toml"
    assert "hunter2" not in shown
    assert lines['rate_limit = "50/100"'] == "file turnout.toml"
    # what it prints is a configuration file that says the same
    (tmp_path / "again.toml").write_text(shown.replace("***@", ""))
    again = subprocess.run([sys.executable, "-m", "turnout", "config", "--config", "again.toml"],
                           cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "port = 9200" in again.stdout and "file again.toml" in again.stdout
