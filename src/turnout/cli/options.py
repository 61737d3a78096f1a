"""Server settings from three places, one declaration each: a configuration
file (``--config turnout.toml``), ``TURNOUT_...`` environment variables and
command-line flags, in rising precedence over the defaults.

Each setting is an :class:`Option`: its place in the file (``section.key``,
which also names its environment variable: ``http.port`` is
``TURNOUT_HTTP_PORT``), its flag if it has one, how its text is read, its
default. The file is checked whole before anything starts: an unknown key or
a wrong value is an error that names the file and the key. Every value keeps
where it came from, which ``turnout config`` prints.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from turnout.cli.arguments import boolean

ENV_PREFIX = "TURNOUT_"
_UNSET: Any = object()  # a flag not given on the command line


class OptionError(ValueError):
    """A setting that cannot be read; the message names it and where it came from."""


@dataclass(frozen=True, slots=True)
class Option:
    key: str  # "section.key": its place in the file, and TURNOUT_SECTION_KEY
    dest: str  # the attribute it becomes
    default: Any = None
    flag: str | None = None  # None: set in the file or the environment only
    parse: Callable[[str], Any] = str  # text (a flag, a variable, a TOML string) to value
    kind: Literal["value", "switch", "list"] = "value"
    invert: bool = False  # a switch whose flag says no: --no-admin is admin.enabled = false
    help: str = ""
    choices: Sequence[str] | None = None
    metavar: str | None = None
    secret: bool = False  # a URL that may carry credentials: shown without them
    show: Callable[[Any], Any] = str  # a value as text again, for a value parse builds (a Rate, say)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace(".", "_")


@dataclass(frozen=True, slots=True)
class Resolved:
    values: argparse.Namespace
    sources: Mapping[str, str]  # dest -> "default", "file PATH", "environment NAME", "flag --x"


def add_flags(parser: argparse.ArgumentParser | Any, options: Iterable[Option]) -> None:
    """The options' flags on ``parser`` (or an argument group), defaults left for ``resolve``."""
    for option in options:
        if option.flag is None:
            continue
        help_text = option.help + ("" if option.kind != "value" else f" (default {_shown(option, option.default)})")
        help_text += f" [{option.key}]"
        if option.kind == "switch":
            parser.add_argument(option.flag, dest=option.dest, action="store_true", default=_UNSET, help=help_text)
        elif option.kind == "list":
            parser.add_argument(option.flag, dest=option.dest, action="append", type=option.parse, default=None,
                                metavar=option.metavar, help=help_text)  # fmt: skip
        else:
            parser.add_argument(option.flag, dest=option.dest, type=option.parse, default=_UNSET,
                                choices=option.choices, metavar=option.metavar, help=help_text)  # fmt: skip


def resolve(
    options: Sequence[Option], given: argparse.Namespace, file: Path | None, environ: Mapping[str, str] = os.environ
) -> Resolved:
    """Each option's value: its flag if given, else its environment variable,
    else the file's value, else its default."""
    document = _read(file) if file is not None else {}
    in_file = _flatten(document, file, {o.key for o in options})
    values, sources = argparse.Namespace(), {}
    for option in options:
        flagged = getattr(given, option.dest, _UNSET)
        if flagged is not _UNSET and flagged is not None:
            value, source = flagged, f"flag {option.flag}" if option.flag else "command line"
            if option.kind == "switch":
                value = True  # the flag's own meaning (--no-admin: no admin plane)
        elif option.env in environ:
            value, source = _from_env(option, environ[option.env]), f"environment {option.env}"
        elif option.key in in_file:
            value, source = _from_file(option, in_file[option.key], file), f"file {file}"
        else:
            value, source = (False if option.kind == "switch" else option.default), "default"
        setattr(values, option.dest, value)
        sources[option.dest] = source
    return Resolved(values, sources)


def render(options: Sequence[Option], resolved: Resolved) -> str:
    """The effective configuration as a configuration file, each value's source beside it."""
    lines: list[str] = []
    section = None
    first: dict[str, int] = {}
    for index, option in enumerate(options):
        first.setdefault(option.key.rpartition(".")[0], index)
    for option in sorted(options, key=lambda o: (o.key.count(".") > 1, first[o.key.rpartition(".")[0]])):
        where, _, name = option.key.rpartition(".")
        if where != section:
            section = where
            lines.append(f"\n[{where}]" if where else "")
        value = getattr(resolved.values, option.dest)
        if option.kind == "switch" and option.invert:
            value = not value
        text = f"# {name} unset" if value is None else f"{name} = {_toml(option, value)}"
        lines.append(f"{text:<60} # {resolved.sources[option.dest]}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _read(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OptionError(f"{file}: cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptionError(f"{file}: not valid TOML: {exc}") from None


def _flatten(document: Mapping[str, Any], file: Path | None, known: set[str], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in document.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in known:
            if not any(k.startswith(key + ".") for k in known):
                raise OptionError(f"{file}: [{key}]: unknown section")
            flat |= _flatten(value, file, known, key + ".")
        elif key not in known:
            raise OptionError(f"{file}: {key}: unknown setting")
        else:
            flat[key] = value
    return flat


def _from_env(option: Option, text: str) -> Any:
    try:
        if option.kind == "switch":
            return boolean(text) != option.invert
        if option.kind == "list":
            return [option.parse(item.strip()) for item in text.split(",") if item.strip()]
        return _checked(option, option.parse(text))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise OptionError(f"environment {option.env}: {exc}") from None


def _from_file(option: Option, value: Any, file: Path | None) -> Any:
    where = f"{file}: {option.key}"
    if option.kind == "switch":
        if not isinstance(value, bool):
            raise OptionError(f"{where}: must be true or false")
        return value != option.invert
    try:
        if option.kind == "list":
            if not isinstance(value, list):
                raise OptionError(f"{where}: must be a list")
            return [option.parse(str(item)) for item in value]
        if isinstance(value, bool | dict | list):
            raise OptionError(f"{where}: {value!r} is not a valid value")
        return _checked(option, option.parse(str(value)))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        if isinstance(exc, OptionError):
            raise
        raise OptionError(f"{where}: {exc}") from None


def _checked(option: Option, value: Any) -> Any:
    if option.choices is not None and value not in option.choices:
        raise ValueError(f"{value!r} is not one of {list(option.choices)}")
    return value


def _shown(option: Option, value: Any) -> str:
    if value is None:
        return "unset"
    if option.secret and isinstance(value, str):
        return _masked(value)
    return str(option.show(value))


def _toml(option: Option, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(option, item) for item in value) + "]"
    text = _masked(str(value)) if option.secret else str(option.show(value))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _masked(url: str) -> str:
    """A URL without its password or token (``redis://:secret@host`` shows ``redis://***@host``)."""
    parts = urlsplit(url)
    if not parts.password and not parts.username:
        return url if not parts.query else urlunsplit(parts._replace(query="***"))
    host = parts.hostname or ""
    netloc = "***@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))
