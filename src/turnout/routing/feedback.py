"""A/B feedback: which variant served a request, what the client later said
about it, and the report that compares the variants.

An A/B-routed response carries its request id; the client posts the outcome
later (a 0/1 conversion or a numeric reward). To turn that outcome into
evidence the server must remember, for every A/B request, which variant it
chose. That happens on the hot path, so ``remember`` only touches memory;
``flush`` (called by the server every second and at shutdown) writes the
buffer to SQLite in one transaction. Feedback that arrives before the flush
finds its assignment in memory.

Which test: decided at report time from what is stored. If every outcome of
the endpoint is 0 or 1 (booleans count as 0/1), the outcomes are conversions
and variants are compared with the two-proportion z-test; a single other
number makes them rewards and every comparison uses Welch's t-test on all the
values (0/1 values included: a mean of mixed values is still a mean). Each
row also stores its own kind, 'conversion' or 'reward', so the rule can be
read off the table.

Request ids are expected to be unique per endpoint. If one is reused, the
first assignment wins (in memory and on disk), as the first feedback does.

Concurrency: every method may be called from any thread. ``remember`` holds
only a memory lock for a few dictionary operations, so it never waits for
the disk; ``flush``, ``record`` and ``report`` share the connection under a
second lock (always taken before the memory lock), so an assignment is never
in neither place while it moves from the buffer to the database.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from turnout.routing.abstats import Comparison, compare_means, compare_proportions

CONVERSION = "conversion"
REWARD = "reward"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS assignments (
        request_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        variant TEXT NOT NULL,
        assigned_at REAL NOT NULL,  -- unix seconds
        PRIMARY KEY (endpoint, request_id)
    )""",
    """CREATE TABLE IF NOT EXISTS outcomes (
        endpoint TEXT NOT NULL,
        request_id TEXT NOT NULL,
        variant TEXT NOT NULL,
        outcome REAL NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('conversion', 'reward')),
        recorded_at REAL NOT NULL,  -- unix seconds
        PRIMARY KEY (endpoint, request_id)
    )""",
)
_INSERT_ASSIGNMENT = (
    "INSERT OR IGNORE INTO assignments (request_id, endpoint, variant, assigned_at) VALUES (?, ?, ?, ?)"
)


class FeedbackError(ValueError):
    """Feedback that cannot be recorded; the message says why."""


class DuplicateFeedback(FeedbackError):
    """Feedback for a request id that already has an outcome (the first one stands)."""


@dataclass(frozen=True, slots=True)
class VariantSummary:
    variant: str
    assigned: int  # A/B requests routed to it
    outcomes: int  # of those, the ones with feedback
    mean: float | None  # mean outcome (the conversion rate for 0/1); None without outcomes


@dataclass(frozen=True, slots=True)
class AbReport:
    """Per-variant summaries, the baseline first, and each other variant against it."""

    endpoint: str
    conversion: bool  # every outcome is 0/1: z-test; otherwise Welch's t-test
    min_count: int  # outcomes each side needs before a comparison has a verdict
    variants: tuple[VariantSummary, ...]
    comparisons: dict[str, Comparison]  # variant -> it against the baseline, in variant order

    @property
    def baseline(self) -> str | None:
        return self.variants[0].variant if self.variants else None

    @property
    def enough(self) -> bool:
        """Every comparison has a verdict (and there is at least one)."""
        return bool(self.comparisons) and all(c.enough for c in self.comparisons.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN or infinity can arise), for the admin API."""
        return {
            "endpoint": self.endpoint,
            "outcome_kind": CONVERSION if self.conversion else REWARD,
            "baseline": self.baseline,
            "min_count": self.min_count,
            "enough": self.enough,
            "variants": [dataclasses.asdict(v) for v in self.variants],
            "comparisons": [
                {"variant": name, "baseline": self.baseline, **dataclasses.asdict(c)}
                for name, c in self.comparisons.items()
            ],
        }


# assignments waiting for a flush at most (about 100 MB); beyond, while flushes fail, new ones are lost
MAX_PENDING = 1_000_000


class Feedback(Protocol):
    """An A/B feedback store: this process's SQLite file, or Redis shared by replicas."""

    @property
    def lost(self) -> int: ...
    def remember(self, endpoint: str, request_id: str, variant: str) -> None: ...
    def flush(self) -> int: ...
    def record(self, endpoint: str, request_id: str, outcome: object) -> str: ...
    def report(self, endpoint: str, min_count: int = 30, baseline: str | None = None) -> AbReport: ...
    def close(self) -> None: ...


class AssignmentBuffer:
    """Which variant served each A/B request, as the hot path notes it: in
    memory only, until the store writes the pending ones (``take``, and
    ``give_back`` when that fails). The latest ``recent_limit`` stay known
    after they are written, since feedback usually follows within seconds.
    Every method may be called from any thread."""

    def __init__(self, recent_limit: int, clock: Callable[[], float]) -> None:
        if recent_limit < 1:
            raise ValueError(f"recent_limit must be at least 1, got {recent_limit}")
        self._recent_limit = recent_limit
        self._clock = clock  # wall clock: the timestamps are records, not durations
        self._lock = threading.Lock()
        # not yet written, oldest first; a dict so record() can find and write one at once
        self._pending: dict[tuple[str, str], tuple[str, float]] = {}
        self._recent: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.lost = 0  # assignments not kept because the write buffer was full (writes failing)

    def remember(self, endpoint: str, request_id: str, variant: str) -> None:
        """Note that ``variant`` served ``request_id``; O(1); a reused id keeps its first variant."""
        key = (endpoint, request_id)
        assigned_at = self._clock()
        with self._lock:
            if key in self._recent:
                return
            self._recent[key] = variant
            if len(self._recent) > self._recent_limit:
                self._recent.popitem(last=False)
            if len(self._pending) >= MAX_PENDING and key not in self._pending:
                self.lost += 1  # the store has been failing for a long while: memory stays bounded
                return
            self._pending.setdefault(key, (variant, assigned_at))

    def take(self) -> dict[tuple[str, str], tuple[str, float]]:
        """The pending assignments, oldest first, now the caller's to write."""
        with self._lock:
            batch, self._pending = self._pending, {}
        return batch

    def give_back(self, batch: dict[tuple[str, str], tuple[str, float]]) -> None:
        """A batch that could not be written: pending again, ahead of newer ones (the first still wins)."""
        with self._lock:
            for key, assignment in self._pending.items():
                batch.setdefault(key, assignment)
            self._pending = batch

    def claim(self, endpoint: str, request_id: str) -> tuple[tuple[str, float] | None, str | None]:
        """For feedback: the assignment if still pending (now the caller's to write), and the variant if recent."""
        key = (endpoint, request_id)
        with self._lock:
            return self._pending.pop(key, None), self._recent.get(key)


class FeedbackStore:
    """A/B assignments and outcomes in one SQLite file (WAL mode)."""

    def __init__(self, path: Path, *, recent_limit: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._buffer = AssignmentBuffer(recent_limit, clock)
        self._db_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit; flush opens its own transaction
        self._connection: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        # in WAL mode NORMAL stays consistent after a crash; a power loss may drop the last second
        self._connection.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._connection.execute(statement)

    def remember(self, endpoint: str, request_id: str, variant: str) -> None:
        """Note that ``variant`` served ``request_id``; memory only, O(1)."""
        self._buffer.remember(endpoint, request_id, variant)

    @property
    def lost(self) -> int:
        """Assignments not kept because the write buffer was full (flushes failing)."""
        return self._buffer.lost

    def flush(self) -> int:
        """Write the buffered assignments in one transaction; returns how many were buffered."""
        with self._db_lock:
            return self._write_pending(self._open_connection())

    def record(self, endpoint: str, request_id: str, outcome: object) -> str:
        """Store the outcome of an A/B-routed request; returns the variant that served it.

        Raises :class:`FeedbackError` for an id never assigned on ``endpoint``
        or an outcome that is not a finite number, :class:`DuplicateFeedback`
        when the id already has an outcome.
        """
        value = outcome_value(outcome)
        with self._db_lock:
            connection = self._open_connection()
            variant = self._assigned_variant(connection, endpoint, request_id)
            kind = CONVERSION if value in (0.0, 1.0) else REWARD
            try:
                connection.execute(
                    "INSERT INTO outcomes (endpoint, request_id, variant, outcome, kind, recorded_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (endpoint, request_id, variant, value, kind, self._clock()),
                )
            except sqlite3.IntegrityError:
                raise DuplicateFeedback(
                    f"duplicate feedback for request id {request_id!r} on {endpoint!r}: an outcome is already "
                    "recorded and the first one stands"
                ) from None
            return variant

    def report(self, endpoint: str, min_count: int = 30, baseline: str | None = None) -> AbReport:
        """Every variant with assignments or outcomes, and each against the baseline.

        Order: ``baseline`` first when given, then the rest alphabetically.
        Alphabetical rather than by first assignment, because under a random
        split which variant served the first request is chance, and the report
        should not change its baseline from one test to the next.
        """
        self.flush()  # count the requests of the last second too
        with self._db_lock:
            connection = self._open_connection()
            assigned = dict(
                connection.execute(
                    "SELECT variant, COUNT(*) FROM assignments WHERE endpoint = ? GROUP BY variant", (endpoint,)
                ).fetchall()
            )
            totals: dict[str, tuple[int, float]] = {}
            rewards = 0
            for variant, count, total, reward_count in connection.execute(
                "SELECT variant, COUNT(*), TOTAL(outcome), SUM(kind = 'reward') FROM outcomes"
                " WHERE endpoint = ? GROUP BY variant",
                (endpoint,),
            ):
                totals[variant] = (count, total)
                rewards += reward_count
            values: dict[str, list[float]] = {}
            if rewards:
                for variant, value in connection.execute(
                    "SELECT variant, outcome FROM outcomes WHERE endpoint = ? ORDER BY rowid", (endpoint,)
                ):
                    values.setdefault(variant, []).append(value)

        return ab_report(endpoint, assigned, totals, values if rewards else None, min_count, baseline)

    def close(self) -> None:
        """Flush and close; closing twice is harmless."""
        with self._db_lock:
            if self._connection is None:
                return
            try:
                self._write_pending(self._connection)
            finally:
                self._connection.close()
                self._connection = None

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError(f"the feedback store {self.path} is closed")
        return self._connection

    def _assigned_variant(self, connection: sqlite3.Connection, endpoint: str, request_id: str) -> str:
        """The variant that served the request: from memory, else disk. The caller holds the database lock."""
        pending, recent = self._buffer.claim(endpoint, request_id)
        if pending is not None:  # written now, so that every stored outcome has its assignment on disk
            connection.execute(_INSERT_ASSIGNMENT, (request_id, endpoint, *pending))
            return pending[0]
        if recent is not None:  # not pending, so already on disk
            return recent
        row = connection.execute(
            "SELECT variant FROM assignments WHERE endpoint = ? AND request_id = ?", (endpoint, request_id)
        ).fetchone()
        if row is None:
            raise FeedbackError(
                f"no A/B assignment for request id {request_id!r} on {endpoint!r}; feedback is accepted "
                "only for ids returned by an A/B-routed response"
            )
        return str(row[0])

    def _write_pending(self, connection: sqlite3.Connection) -> int:
        """The buffer in one transaction; the caller holds the database lock."""
        batch = self._buffer.take()
        if not batch:
            return 0
        rows = [(request_id, endpoint, variant, at) for (endpoint, request_id), (variant, at) in batch.items()]
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                _INSERT_ASSIGNMENT,
                rows,
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._buffer.give_back(batch)  # kept for the next flush
            raise
        return len(rows)


def ab_report(
    endpoint: str,
    assigned: dict[str, int],
    totals: dict[str, tuple[int, float]],
    values: dict[str, list[float]] | None,
    min_count: int,
    baseline: str | None,
) -> AbReport:
    """The report from what a store holds: assignments per variant, outcomes
    per variant as (count, total), and every outcome by variant when any is a
    reward (None: all are 0/1 conversions). Pure: both stores build it so."""
    rewarded = values is not None
    values = values or {}
    names = sorted(set(assigned) | set(totals))
    if baseline is not None:
        if baseline not in names:
            known = ", ".join(names) or "none yet"
            raise FeedbackError(f"no variant {baseline!r} on {endpoint!r}; variants with data: {known}")
        names = [baseline, *(n for n in names if n != baseline)]
    summaries = []
    for name in names:
        count, total = totals.get(name, (0, 0.0))
        if not count:
            mean: float | None = None
        elif rewarded:
            mean = math.fsum(values[name]) / count
        else:
            mean = total / count
        summaries.append(VariantSummary(name, assigned.get(name, 0), count, mean))

    comparisons: dict[str, Comparison] = {}
    first, *others = names or [""]
    for name in others:
        if rewarded:
            comparisons[name] = compare_means(values.get(first, []), values.get(name, []), min_count)
        else:
            (count_a, total_a), (count_b, total_b) = totals.get(first, (0, 0.0)), totals.get(name, (0, 0.0))
            comparisons[name] = compare_proportions(round(total_a), count_a, round(total_b), count_b, min_count)
    # the minimum abstats applies: a variance needs two values, a proportion one
    needed = max(min_count, 1 if not rewarded else 2)
    return AbReport(endpoint, not rewarded, needed, tuple(summaries), comparisons)


def outcome_value(outcome: object) -> float:
    # bool before the numbers check: True is an int, and means a conversion
    if isinstance(outcome, bool):
        return 1.0 if outcome else 0.0
    if isinstance(outcome, numbers.Real):
        value = float(outcome)
        if math.isfinite(value):
            return value
    raise FeedbackError(f"an outcome must be a finite number or a boolean, got {outcome!r}")


# ---------------------------------------------------------------- the CLI's table


def format_report(report: AbReport) -> str:
    """A plain-text table: per variant, then each comparison with the baseline."""
    if not report.variants:
        return f"no A/B assignments or outcomes for {report.endpoint!r} yet"
    kind = "0/1 conversions" if report.conversion else "numeric rewards"
    mean_header = "conversion" if report.conversion else "mean"
    width = max(len("variant"), *(len(v.variant) for v in report.variants))
    lines = [
        f"A/B report for {report.endpoint!r} ({kind}; baseline {report.baseline!r})",
        "",
        f"{'variant':<{width}}  {'assigned':>10}  {'outcomes':>10}  {mean_header:>12}",
    ]
    for v in report.variants:
        mean = "-" if v.mean is None else _format_mean(v.mean, report.conversion)
        lines.append(f"{v.variant:<{width}}  {v.assigned:>10}  {v.outcomes:>10}  {mean:>12}")
    if not report.comparisons:
        lines += ["", "only one variant has data: nothing to compare yet"]
    for name, c in report.comparisons.items():
        lines += ["", f"{name} vs {report.baseline} ({c.test}):"]
        if not c.enough or c.difference is None or c.ci_low is None or c.ci_high is None or c.p_value is None:
            lines.append(
                f"  not enough data yet: {report.min_count} outcomes per variant needed, have {c.count_a} / {c.count_b}"
            )
            continue
        lines.append(
            f"  difference {_format_difference(c.difference, report.conversion)}"
            f" (95% CI {_format_difference(c.ci_low, report.conversion)}"
            f" to {_format_difference(c.ci_high, report.conversion)}), p = {c.p_value:.4g}"
        )
    return "\n".join(lines)


def _format_mean(mean: float, conversion: bool) -> str:
    return f"{mean * 100:.2f}%" if conversion else f"{mean:.4g}"


def _format_difference(difference: float, conversion: bool) -> str:
    # a difference of rates is in percentage points, not percent
    return f"{difference * 100:+.2f} pp" if conversion else f"{difference:+.4g}"
