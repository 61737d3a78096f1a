"""A Python model's worker process: ``python -m turnout.model.runtimes.worker
FD [IN_FD OUT_FD SIZE]``.

The server (``process.py``) starts one per instance and talks to it over a
socket pair (``FD`` is the worker's end), one message at a time, pickled.
Numeric arrays go through two shared blocks (``arena.py``: ``IN_FD`` holds
the batch, ``OUT_FD`` the answer), and the messages only say where they
lie; without them (no ``memfd_create`` here), or past a block's end, they
travel pickled as one buffer each (never element by element). BYTES arrays
are always pickled, element by element, as they are Python objects on both
sides.

Messages in: ``("load", LoadSpec)``, then ``("serving", signature,
max_batch_size)``, ``("predict", inputs, outputs, parameters)``,
``("stop",)``. Out: ``("ok", value)``, ``("error", text)`` and, at any time
before either, ``("log", level, logger, text)`` for each record the model
logs, which the server logs with the model and version.

The worker exits when the server closes its end, or when the server itself
is gone (a watchdog checks its parent), so none is left behind.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import select
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from turnout.model.runtimes.arena import Arena
from turnout.model.runtimes.python import ModelContext, PythonLoaded, PythonModel, model_class_in
from turnout.observability.logs import capture_warnings

SPIN_SECONDS = 0.0005  # awake after each reply for this long, waiting for the next batch


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What a worker loads: ``model.py`` in ``version_dir``, or an installed ``class_path``."""

    version_dir: Path
    model: str  # the model's name, for the context and the logs
    options: dict[str, Any]
    instance: int
    class_name: str | None = None  # which class of model.py
    class_path: str | None = None  # "package.module:Class" instead of model.py


class _ToServer(logging.Handler):
    def __init__(self, connection: Connection, lock: threading.Lock) -> None:
        super().__init__()
        self._connection = connection
        self._lock = lock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self._lock:
                self._connection.send(("log", record.levelno, record.name, self.format(record)))
        except Exception:
            pass


def load(spec: LoadSpec) -> PythonLoaded:
    if spec.class_path is not None:
        module_name, _, attribute = spec.class_path.partition(":")
        cls = getattr(importlib.import_module(module_name), attribute)
        if not (isinstance(cls, type) and issubclass(cls, PythonModel)):
            raise TypeError(f"{spec.class_path} is not a PythonModel subclass")
    else:
        cls = model_class_in(spec.version_dir / "model.py", spec.class_name, spec.instance)
    model = cls()
    model.load(ModelContext(spec.version_dir, spec.options, spec.instance, spec.model))
    return PythonLoaded(model)


def serve(connection: Connection, given: Arena | None = None, answered: Arena | None = None) -> None:
    lock = threading.Lock()  # the model may log from its own threads
    handler = _ToServer(connection, lock)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    capture_warnings()  # the model's libraries' warnings reach the server's log as records
    loaded: PythonLoaded | None = None
    loop: asyncio.AbstractEventLoop | None = None
    fd = connection.fileno()
    spins = spinning_pays()
    soon = spins  # the last message came soon after the reply before it: wait for the next awake
    while True:
        replied = time.perf_counter()
        if soon:
            _next_soon(fd)
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return  # the server closed its end
        soon = spins and time.perf_counter() - replied < 2 * SPIN_SECONDS
        kind = message[0]
        try:
            if kind == "stop":
                if loaded is not None:
                    loaded.close()
                with lock:
                    connection.send(("ok", None))
                return
            if kind == "load":
                loaded = load(message[1])
                value: Any = (loaded.signature, sorted(loaded.parameters))
            elif kind == "serving":
                assert loaded is not None
                loaded.serving(message[1], message[2])
                value = None
            elif kind == "predict":
                assert loaded is not None
                _, inputs, outputs, parameters = message
                if given is not None:  # views of the server's block: valid for this batch
                    inputs = given.take(inputs, copy=False)
                if loaded.asynchronous:  # one loop for the worker's life: a new one per batch costs more
                    loop = loop or asyncio.new_event_loop()
                    value = loop.run_until_complete(loaded.predict_async(inputs, outputs, parameters))
                else:
                    value = loaded.predict(inputs, outputs, parameters)
                if answered is not None:
                    value = answered.put(value)
            else:
                raise ValueError(f"unknown message {kind!r}")
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if kind == "load":
                text += "\n" + "".join(traceback.format_exception(exc)[-3:])
            with lock:
                connection.send(("error", text))
            continue
        with lock:
            connection.send(("ok", value))


def spinning_pays() -> bool:
    """Whether waiting awake can pay: only with a core to spare. On one core
    (``taskset -c 0``, a one-CPU container) the process spinning holds the
    very core the other side needs to answer, and the wait costs its whole
    length every time (measured: 0.93 ms against 0.17 in-process at c=1)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return len(cores) > 1


def _next_soon(fd: int) -> None:
    """Wait for the next message awake for a moment before sleeping in ``recv``:
    under steady traffic it comes within this window, and a sleeping process
    takes tens of microseconds (more on a VM) to wake, which would be most of
    the cost a worker adds to a small batch."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while time.perf_counter() < deadline:
        if select.select([fd], [], [], 0)[0]:
            return


def _watch_parent(parent: int) -> None:
    """The server died without closing (SIGKILL): this worker goes too."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main() -> None:
    connection = Connection(int(sys.argv[1]))
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="watchdog").start()
    if len(sys.argv) == 5:  # the server's shared blocks (arena.py): inputs, outputs, their size
        size = int(sys.argv[4])
        serve(connection, Arena(int(sys.argv[2]), size), Arena(int(sys.argv[3]), size))
    else:
        serve(connection)


if __name__ == "__main__":
    main()
