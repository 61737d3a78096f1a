"""``turnout models``: check a repository without serving it (``validate``),
and a running server's default versions (``cli/lifecycle.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from turnout.cli import lifecycle
from turnout.errors import ConfigError
from turnout.model.loader import LoadFailed, load_version
from turnout.model.repository import ModelRepository


def add_commands(commands: Any) -> None:
    models = commands.add_parser(
        "models", help="inspect a model repository; pin, unpin and roll back a running server's versions"
    ).add_subparsers(title="models commands")
    validate = models.add_parser("validate", help="check every model in a repository and print its signature")
    validate.add_argument("repository", type=Path)
    validate.set_defaults(run=_validate)
    lifecycle.add_commands(models)


def _validate(args: argparse.Namespace) -> int:
    if not args.repository.is_dir():
        print(f"turnout: the model repository {args.repository} does not exist or is not a directory", file=sys.stderr)
        return 2
    repository = ModelRepository(args.repository)
    names = repository.model_names()
    if not names:
        print(f"{args.repository}: no model directories")
        return 1
    failures = 0
    for name in names:
        try:
            source = repository.read(name)
        except ConfigError as exc:
            print(f"{name}: ERROR {exc}")
            failures += 1
            continue
        for version in source.versions:
            try:
                loaded = load_version(source, version)
            except LoadFailed as exc:
                print(f"{name} version {version}: ERROR {exc}")
                failures += 1
                continue
            for instance in loaded.instances:
                instance.close()
            print(
                f"{name} version {version}: OK ({source.config.runtime.name}, max_batch_size {loaded.max_batch_size})"
            )
            for spec in loaded.signature.inputs:
                print(f"    input  {spec.describe()}")
            for spec in loaded.signature.outputs:
                print(f"    output {spec.describe()}")
    print(f"{len(names)} model(s), {failures} problem(s)")
    return 1 if failures else 0
