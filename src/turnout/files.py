"""Writing a small state file so a reader (or a crash) never sees half of it:
a temporary file beside it, then an atomic rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(
    path: Path, document: Any, mode: int | None = None, indent: int = 1, sort_keys: bool = True
) -> None:
    """``document`` as JSON at ``path``, whole or not at all; ``mode``: its permissions (e.g. 0o600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=indent, sort_keys=sort_keys)
            out.write("\n")
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
