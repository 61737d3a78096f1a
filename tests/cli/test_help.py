"""`turnout serve --help` is the reference a newcomer reads first (issue 19):
every option says what it does, and every option that takes a value says
what it is when not given."""

from __future__ import annotations

import argparse

from turnout.cli.main import _parser

REPEATABLE = {"--mlflow-model"}  # none unless given: nothing to show


def serve_options() -> list[argparse.Action]:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [
        a for a in commands.choices["serve"]._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


def test_every_serve_option_has_help() -> None:
    assert [a.option_strings for a in serve_options() if not (a.help or "").strip()] == []


def test_every_serve_option_taking_a_value_shows_its_default() -> None:
    taking_values = [a for a in serve_options() if a.nargs != 0 and a.option_strings[0] not in REPEATABLE]
    assert [a.option_strings for a in taking_values if "default" not in (a.help or "")] == []
    shown = {a.option_strings[0]: a.help for a in taking_values}
    assert "(default 67108864)" in shown["--max-body-bytes"]
    assert "(default info)" in shown["--log-level"]
