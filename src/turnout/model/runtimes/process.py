"""A Python model instance in a worker process of its own (``isolation =
"process"``, the default): the GIL of one instance never holds up another,
or the server.

Each :class:`ProcessInstance` is one worker (``worker.py``), driven from the
instance's thread, one batch at a time. What goes wrong stays with its batch:

- the worker dies during a batch (a crash, the OOM killer): that batch fails
  with a 500 naming the model and how the worker ended; the next batch starts
  a new worker, loaded again, first;
- a batch runs past the model's ``timeout_ms`` (or 60 s without one): the
  worker is killed, the batch fails the same way, the next starts a new one;
- what the model logs reaches the server's log, with the model and version.

``close`` stops the worker (asked, then killed); a worker whose server dies
without closing ends itself (``worker.py``'s watchdog).

Latency: a process asleep in ``poll`` takes tens of microseconds to wake (more
on a VM), which was most of what a worker added to a small batch. So each
side waits awake for a moment first, where that pays: the server for a
reply (``SPIN_SECONDS``, only while replies have been that quick), the
worker for the next batch (only while batches have followed closely); and
neither where the two share a single core (``worker.spinning_pays``). A
batch of one row then costs about 40 µs more than in-process on one core
(the benchmark's numpy logistic regression, ``predict`` called back to
back: 39-40 µs against 4.6 in-process; 55 before the reply wait and the
slots stopped paying for a selector and for dataclass pickling).
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from turnout.model.runtimes.arena import Arena
from turnout.model.runtimes.base import NO_PARAMETERS, LoadedModel, Outputs, Tensors
from turnout.model.runtimes.worker import LoadSpec, spinning_pays
from turnout.model.signature import Signature

log = logging.getLogger("turnout.worker")

NO_TIMEOUT_SECONDS = 60.0  # a batch of a model without timeout_ms may take this long before its worker is killed
LOAD_SECONDS = 300.0  # loading a model in a worker
STDERR = 2  # the server's standard error, as a file descriptor
SPIN_SECONDS = 0.0002  # awake after sending a batch, for a quick reply


class WorkerFailed(RuntimeError):
    """The worker died or was stopped during a batch; the message says how."""


class ProcessInstance(LoadedModel):
    # Each batch is a round trip to the worker, tens of microseconds of the
    # server's CPU whatever its rows. Without a wait, a server busy reading
    # requests finds one queued each time the worker answers: one-row batches,
    # measured 5,472 req/s at REST c=64 (logreg, one core) against 10,378 with
    # this wait in the side-by-side run (8,500-15,500 in single runs; 14,271
    # in-process); c=1 is unchanged, as no wait is made for a lone client.
    batch_delay = 0.0005

    def __init__(self, spec: LoadSpec, version: str, timeout: float | None) -> None:
        self._spec = spec
        self._where = f"model '{spec.model}' version {version} instance {spec.instance}"
        self._timeout = timeout or NO_TIMEOUT_SECONDS
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._serving: tuple[Signature, int] | None = None
        self._signature: Signature | None = None
        self._lock = threading.Lock()  # a restart and close never overlap
        self._spins = spinning_pays()
        self._quick = self._spins  # the last reply came within the spin: wait for the next awake
        # tensors to the worker and back through shared memory (arena.py), kept across worker restarts
        self._given = Arena.create(f"turnout-{spec.model}-in")
        self._answered = Arena.create(f"turnout-{spec.model}-out") if self._given is not None else None
        self._start()

    @property
    def signature(self) -> Signature | None:
        return self._signature

    def serving(self, signature: Signature, max_batch_size: int) -> None:
        self._serving = (signature, max_batch_size)
        self._call(("serving", signature, max_batch_size), LOAD_SECONDS)

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        with self._lock:
            if self._connection is None:  # the last batch ended its worker: a new one first
                self._start()
                if self._serving is not None:
                    self._call(("serving", *self._serving), LOAD_SECONDS)
        given = self._given.put(inputs) if self._given is not None else dict(inputs)
        answer = self._call(("predict", given, list(outputs), dict(parameters)), self._timeout)
        result: Outputs = self._answered.take(answer, copy=True) if self._answered is not None else answer
        return result

    def close(self) -> None:
        with self._lock:
            connection, process = self._connection, self._process
            self._connection = self._process = None
        if connection is not None:
            try:
                connection.send(("stop",))
                if connection.poll(5.0):
                    connection.recv()
            except (OSError, EOFError):
                pass
            connection.close()
        if process is not None:
            _end(process, 2.0)
        for arena in (self._given, self._answered):
            if arena is not None:
                arena.close()
        self._given = self._answered = None

    # inside
    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "turnout.model.runtimes.worker", str(theirs.fileno())]
        passed = [theirs.fileno()]
        if self._given is not None and self._answered is not None:
            command += [str(self._given.fd), str(self._answered.fd), str(self._given.size)]
            passed += [self._given.fd, self._answered.fd]
        # the model's print() goes where the server's log does (standard error), not to its standard output
        process = subprocess.Popen(command, pass_fds=passed, stdin=subprocess.DEVNULL, stdout=STDERR)
        theirs.close()
        self._process, self._connection = process, Connection(ours.detach())
        try:
            self._signature, parameters = self._call(("load", self._spec), LOAD_SECONDS)
        except Exception:
            self.close()
            raise
        self.parameters = frozenset(parameters)  # type: ignore[misc]  # the model class's
        log.info("%s: worker %d ready", self._where, process.pid)

    def _call(self, message: tuple[Any, ...], timeout: float) -> Any:
        connection = self._connection
        assert connection is not None
        try:
            sent = time.perf_counter()
            connection.send(message)
            if self._quick:
                _reply_soon(connection.fileno())
            while True:
                if not _readable(connection.fileno(), timeout):
                    raise self._lost(f"ran past its {timeout:g} s: the worker was stopped", kill=True)
                reply = connection.recv()
                if reply[0] == "log":
                    _, level, logger, text = reply
                    log.log(level, "%s: %s: %s", self._where, logger, text)
                    continue
                break
        except (EOFError, OSError):
            raise self._lost("the worker ended during this batch") from None
        # spin next time only if this reply was quick: a slow model's batches would waste the wait
        self._quick = self._spins and time.perf_counter() - sent < 2 * SPIN_SECONDS
        if reply[0] == "error":
            raise RuntimeError(reply[1])
        return reply[1]

    def _lost(self, what: str, kill: bool = False) -> WorkerFailed:
        """The worker is gone (or made to go): the next batch starts another."""
        connection, process = self._connection, self._process
        self._connection = self._process = None
        if connection is not None:
            connection.close()
        ended = ""
        if process is not None:
            if kill:
                process.kill()
            code = process.wait()
            ended = f" ({_how(code)})" if not kill else ""
        message = f"{self._where}: {what}{ended}; a new worker takes the next batch"
        log.error("%s", message)
        return WorkerFailed(message)


def _readable(fd: int, timeout: float) -> bool:
    """``Connection.poll`` without its cost: it builds a selector per call,
    a sixth of a small batch's round trip (measured 15 of 55 µs)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _reply_soon(fd: int) -> None:
    """A small batch's reply comes within microseconds: wait for it awake for
    a moment before sleeping in ``poll`` (waking takes tens of microseconds)."""
    deadline = time.perf_counter() + SPIN_SECONDS
    while time.perf_counter() < deadline:
        if select.select([fd], [], [], 0)[0]:
            return


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _end(process: subprocess.Popen[bytes], patience: float) -> None:
    try:
        process.wait(patience)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
