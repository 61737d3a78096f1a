"""Whether a ``torch.export`` archive (``.pt2``) holds only data.

``torch.export.load`` is not a safe loader by itself: PyTorch's own docs say
it "uses pickle under the hood". An archive can carry weights or constants
marked ``use_pickle`` (read with ``torch.load(weights_only=False)``),
opaque objects (``pickle.loads``), TorchBind objects, legacy ``.pt`` payloads,
sample inputs that fail ``weights_only`` loading (torch then retries them
with ``weights_only=False``), and AOTInductor shared libraries (native
code, loaded with ``dlopen``). A plain ``torch.export.save`` of an
``nn.Module`` holds none of these: its weights are raw tensor bytes beside a
JSON config, its graph JSON.

:func:`code_in_archive` reads the archive's table of contents and JSON
configs, never unpickling anything, and names each part that would run code
on load; the runtime refuses the archive unless the model is trusted. Pure:
it takes the archive's bytes as a zip file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

#: payloads in data/constants/ that are objects, not tensors (torch's own prefixes)
_OBJECT_CONSTANTS = ("custom_obj", "opaque_obj")


def code_in_archive(path: Path) -> list[str]:
    """The parts of the ``.pt2`` at ``path`` that would run code when
    ``torch.export.load`` reads it; empty when it holds only tensors, JSON
    and sample inputs (those are checked by :func:`sample_inputs`)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(
            f"{path.name} is not a torch.export archive (a zip file); save it with torch.export.save"
        ) from None
    with archive:
        names = archive.namelist()
        found: list[str] = []
        for name in names:
            inner = _inside(name)
            if inner.startswith("data/aotinductor/"):
                found.append(f"{inner} (AOTInductor native code)")
            elif inner.startswith(("data/weights/", "data/constants/")) and inner.endswith(".pt"):
                found.append(f"{inner} (a legacy pickled payload)")
            elif inner.endswith(("_weights_config.json", "_constants_config.json")):
                found.extend(_pickled_payloads(inner, archive.read(name)))
        return found


def sample_inputs(path: Path) -> list[tuple[str, bytes]]:
    """Each program's sample inputs file (``data/sample_inputs/*.pt``), to be
    read with ``torch.load(weights_only=True)`` before torch reads it less
    carefully."""
    with zipfile.ZipFile(path) as archive:
        return [
            (_inside(name), archive.read(name))
            for name in archive.namelist()
            if _inside(name).startswith("data/sample_inputs/")
        ]


def _pickled_payloads(config_name: str, raw: bytes) -> list[str]:
    try:
        entries = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError):
        return [f"{config_name} (unreadable, so its payloads cannot be checked)"]
    found = []
    for fqn, payload in entries.items():
        if not isinstance(payload, dict):
            found.append(f"{config_name}: {fqn} (unreadable entry)")
        elif payload.get("use_pickle"):
            found.append(f"{fqn} (a pickled payload)")
        elif str(payload.get("path_name", "")).startswith(_OBJECT_CONSTANTS):
            found.append(f"{fqn} (a pickled object constant)")
    return found


def _inside(name: str) -> str:
    """``model/data/weights/w0`` → ``data/weights/w0``: torch.export.save puts
    everything under one top folder named after the file."""
    return name.split("/", 1)[1] if "/" in name else name
