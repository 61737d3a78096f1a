"""Sections of BENCHMARKS.md that other benchmark scripts own.

The side-by-side run rewrites BENCHMARKS.md whole; a section between
``<!-- begin NAME -->`` and ``<!-- end NAME -->`` belongs to another script
(``shadow_p99.py``, say), which replaces it alone, and the side-by-side run
carries it over unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- begin (?P<name>[\w-]+) -->\n.*?<!-- end (?P=name) -->\n", re.S)


def put(report: Path, name: str, body: str) -> None:
    """Write ``body`` as the section ``name``, in place or at the end."""
    text = report.read_text() if report.exists() else ""
    section = f"<!-- begin {name} -->\n{body.rstrip()}\n<!-- end {name} -->\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->\n.*?<!-- end {re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    report.write_text(text)


def carried(old: str) -> str:
    """Every owned section of ``old``, to append to a rewritten report."""
    found = [m.group(0) for m in _SECTION.finditer(old)]
    return "".join("\n" + section for section in found)
