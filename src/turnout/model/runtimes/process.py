"""A Python model instance in a worker process of its own (``isolation =
"process"``, the default): the GIL of one instance never holds up another,
or the server.

Each :class:`ProcessInstance` is one worker (``worker.py``), one batch at a
time: a batch's round trip blocks the instance's thread (``predict``), a
lone request's is awaited on the server's event loop (``predict_lone``).
What goes wrong stays with its batch:

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

import asyncio
import logging
import math
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from turnout.model.runtimes.arena import Arena
from turnout.model.runtimes.base import NO_PARAMETERS, LoadedModel, Outputs, Tensors
from turnout.model.runtimes.worker import LoadSpec, spinning_pays
from turnout.model.signature import Signature

log = logging.getLogger("turnout.worker")

NO_TIMEOUT_SECONDS = 60.0  # a batch of a model without timeout_ms may take this long before its worker is killed
LOAD_SECONDS = 300.0  # loading a model in a worker
# a message to the worker, or what makes it: made only once the worker has
# answered the last one, as it may be reading the shared block until then
Message = tuple[Any, ...] | Callable[[], tuple[Any, ...]]
STDERR = 2  # the server's standard error, as a file descriptor
SPIN_SECONDS = 0.0002  # awake after sending a batch, for a quick reply
# A lone request's reply is waited for blocking the event loop while the model's
# round trips take under QUICK_SECONDS, for at most BLOCK_SECONDS (then
# awaited): a model that hangs holds the loop that long once, as its round
# trips are then no longer quick. Not a shorter bound: the kernel timer of a
# wait under a few milliseconds cost each reply 14 µs on this VM (a 0.5 ms
# bound: 84 against 70 µs a logreg round trip).
QUICK_SECONDS = 0.001
BLOCK_SECONDS = 0.05
LONE_AFTER_SECONDS = 0.00015  # sent this long after the last reply (the batcher's lone requests' spacing)


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
    # A lone request's round trip is awaited on the event loop (predict_lone),
    # not handed to the instance's thread: the hand-off each way cost c=1
    # about 0.1 ms (xgb). Batches still go through the thread: awaited on the
    # loop, a reply waits for the loop to finish its turn of reading requests,
    # the worker idles meanwhile (xgb, REST c=64: 7% fewer answered, and
    # requests shed). See _call_async for when the loop blocks instead.
    lone_awaits = True

    def __init__(self, spec: LoadSpec, version: str, timeout: float | None) -> None:
        self._spec = spec
        self._where = f"model '{spec.model}' version {version} instance {spec.instance}"
        self._timeout = timeout or NO_TIMEOUT_SECONDS
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._owed = False  # a reply the worker still sends, to a call abandoned on the loop
        self._round_trip = math.inf  # seconds, a moving average over this worker's batches
        self._replied = -math.inf  # when the last reply came (perf_counter)
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
        """The round trip from a thread, blocking it (batch jobs, the warm-up)."""
        self._ensure_worker()
        answer = self._call(lambda: self._predict_message(inputs, outputs, parameters), self._timeout)
        return self._answer(answer)

    async def predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        """The round trip from the event loop, which serves other requests while
        the worker computes: no thread between the loop and the worker."""
        return await self._predict_async(inputs, outputs, parameters, lone=False)

    async def predict_lone(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        return await self._predict_async(inputs, outputs, parameters, lone=True)

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
    async def _predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any], lone: bool
    ) -> Outputs:
        if self._connection is None:  # the last batch ended its worker: a new one first, loaded off the loop
            await asyncio.to_thread(self._ensure_worker)
        answer = await self._call_async(lambda: self._predict_message(inputs, outputs, parameters), self._timeout, lone)
        return self._answer(answer)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._connection is None:  # the last batch ended its worker: a new one first
                self._start()
                if self._serving is not None:
                    self._call(("serving", *self._serving), LOAD_SECONDS)

    def _predict_message(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any]
    ) -> tuple[Any, ...]:
        given = self._given.put(inputs) if self._given is not None else dict(inputs)
        return ("predict", given, list(outputs), dict(parameters))

    def _answer(self, answer: Any) -> Outputs:
        result: Outputs = self._answered.take(answer, copy=True) if self._answered is not None else answer
        return result

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

    def _call(self, message: Message, timeout: float) -> Any:
        """Send ``message`` (or what it makes, once the worker is done with the
        last batch's block) and wait for the reply."""
        connection = self._connection
        assert connection is not None
        try:
            if self._owed:
                self._reply(connection, timeout)
                self._owed = False
            sent = time.perf_counter()
            connection.send(message() if callable(message) else message)
            if self._quick:
                _reply_soon(connection.fileno())
            reply = self._reply(connection, timeout)
        except (EOFError, OSError):
            raise self._lost("the worker ended during this batch") from None
        self._replied = time.perf_counter()
        # spin next time only if this reply was quick: a slow model's batches would waste the wait
        self._quick = self._spins and self._replied - sent < 2 * SPIN_SECONDS
        return _value(reply)

    async def _call_async(self, message: Message, timeout: float, lone: bool = False) -> Any:
        connection = self._connection
        assert connection is not None
        try:
            if self._owed:
                await self._reply_async(connection, timeout)
            # blocking, but small (arrays lie in the shared block) and the worker is waiting to read it
            connection.send(message() if callable(message) else message)
            sent = time.perf_counter()
            reply = None
            if lone and sent - self._replied >= LONE_AFTER_SECONDS and self._round_trip < QUICK_SECONDS:
                # A lone request (c=1) to a quick model: the loop has nothing else to
                # do, and waiting for the reply blocked costs 15-20 µs less than
                # awaiting it (logreg). Bounded, so a model that hangs cannot stall
                # the loop. Not for a request sent right after a reply: under load,
                # the loop blocked here makes the next arrivals look lone too, and
                # they would run one by one (xgb, REST c=64: 6,000-7,700 req/s,
                # against 12,000-13,500 awaited).
                reply = self._reply_within(connection, BLOCK_SECONDS)
            if reply is None:
                reply = await self._reply_async(connection, timeout)
        except (EOFError, OSError):
            raise self._lost("the worker ended during this batch") from None
        self._replied = time.perf_counter()
        took = self._replied - sent
        self._round_trip = took if self._round_trip == math.inf else 0.8 * self._round_trip + 0.2 * took
        return _value(reply)

    def _reply_within(self, connection: Connection, seconds: float) -> tuple[Any, ...] | None:
        """The reply if it comes within ``seconds``, waited for blocking."""
        if self._spins and self._round_trip < 2 * SPIN_SECONDS:
            _reply_soon(connection.fileno())
        deadline = time.perf_counter() + seconds
        while _readable(connection.fileno(), max(0.0, deadline - time.perf_counter())):
            if (reply := self._received(connection)) is not None:
                return reply
        return None

    def _reply(self, connection: Connection, timeout: float) -> tuple[Any, ...]:
        """The worker's answer to the message sent last, its log records logged on the way."""
        while True:
            if not _readable(connection.fileno(), timeout):
                raise self._lost(f"ran past its {timeout:g} s: the worker was stopped", kill=True)
            if (reply := self._received(connection)) is not None:
                return reply

    async def _reply_async(self, connection: Connection, timeout: float) -> tuple[Any, ...]:
        """``_reply`` awaited on the event loop. Cancelled (a client gone, say),
        the reply is still owed: the next call reads it first, so it can
        never be taken for the answer to another batch."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._owed = True
        while True:
            if not await _readable_async(loop, connection.fileno(), deadline - loop.time()):
                raise self._lost(f"ran past its {timeout:g} s: the worker was stopped", kill=True)
            if (reply := self._received(connection)) is not None:
                self._owed = False
                return reply

    def _received(self, connection: Connection) -> tuple[Any, ...] | None:
        reply: tuple[Any, ...] = connection.recv()
        if reply[0] != "log":
            return reply
        _, level, logger, text = reply
        log.log(level, "%s: %s: %s", self._where, logger, text)
        return None

    def _lost(self, what: str, kill: bool = False) -> WorkerFailed:
        """The worker is gone (or made to go): the next batch starts another."""
        connection, process = self._connection, self._process
        self._connection = self._process = None
        self._owed = False
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


def _value(reply: tuple[Any, ...]) -> Any:
    if reply[0] == "error":
        raise RuntimeError(reply[1])
    return reply[1]


def _readable(fd: int, timeout: float) -> bool:
    """``Connection.poll`` without its cost: it builds a selector per call,
    a sixth of a small batch's round trip (measured 15 of 55 µs)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


async def _readable_async(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> bool:
    """Whether ``fd`` became readable within ``timeout``, waited for on the loop."""
    ready: asyncio.Future[bool] = loop.create_future()

    def settle(value: bool) -> None:
        if not ready.done():
            ready.set_result(value)

    loop.add_reader(fd, settle, True)
    timer = loop.call_later(max(0.0, timeout), settle, False)
    try:
        return await ready
    finally:
        loop.remove_reader(fd)
        timer.cancel()


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
