"""The planner's rules, one at a time, on a plain list of requests and a given time."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.batcher.planner import BatchLimits, Take, Wait, plan


@dataclass(frozen=True, slots=True)
class Req:
    rows: int
    key: Hashable = "a"
    arrived: float = 0.0


def test_empty_queue_waits_for_an_arrival() -> None:
    assert plan([], BatchLimits(8, 0.5), now=100.0) == Wait(None)
    assert plan([], BatchLimits(0), now=100.0) == Wait(None)


def test_without_a_batch_axis_takes_exactly_the_head() -> None:
    queue = [Req(1, "a", 5.0), Req(1, "a", 5.0), Req(1, "b", 5.0)]
    # max_queue_delay does not apply: there is nothing to wait for
    assert plan(queue, BatchLimits(0, max_queue_delay=10.0), now=5.0) == Take((0,))


def test_gathers_the_heads_key_and_skips_other_keys() -> None:
    queue = [Req(1, "a"), Req(2, "b"), Req(1, "a"), Req(1, "c"), Req(2, "a")]
    assert plan(queue, BatchLimits(8, 1.0), now=1.0) == Take((0, 2, 4))


def test_only_the_heads_key_counts_even_when_others_would_fill_a_batch() -> None:
    queue = [Req(1, "a"), Req(4, "b"), Req(4, "b")]
    assert plan(queue, BatchLimits(4, 1.0), now=0.5) == Wait(1.0)


def test_stops_at_the_first_same_key_request_that_does_not_fit() -> None:
    # 3 + 4 > 6: the 4-row request and the 1-row one behind it wait, keeping arrival order
    queue = [Req(3), Req(2, "b"), Req(4), Req(1)]
    assert plan(queue, BatchLimits(6, max_queue_delay=10.0), now=0.0) == Take((0,))


def test_a_request_that_does_not_fit_makes_the_batch_run_now() -> None:
    queue = [Req(2), Req(2), Req(3)]
    assert plan(queue, BatchLimits(5, max_queue_delay=10.0), now=0.0) == Take((0, 1))


def test_a_full_batch_is_taken_at_once() -> None:
    queue = [Req(2, arrived=3.0), Req(2, arrived=3.0), Req(2, arrived=3.0)]
    assert plan(queue, BatchLimits(4, max_queue_delay=10.0), now=3.0) == Take((0, 1))


def test_a_single_full_request_is_taken_at_once() -> None:
    assert plan([Req(4, arrived=3.0)], BatchLimits(4, max_queue_delay=10.0), now=3.0) == Take((0,))


def test_waits_until_the_heads_delay_runs_out() -> None:
    queue = [Req(1, arrived=10.0), Req(1, arrived=10.2)]
    # the deadline is the head's, not the newest request's
    assert plan(queue, BatchLimits(8, max_queue_delay=0.5), now=10.3) == Wait(10.5)


def test_takes_once_the_deadline_is_reached() -> None:
    queue = [Req(1, arrived=10.0), Req(1, "b", arrived=10.1), Req(2, arrived=10.2)]
    limits = BatchLimits(8, max_queue_delay=0.5)
    assert plan(queue, limits, now=10.5) == Take((0, 2))
    assert plan(queue, limits, now=11.0) == Take((0, 2))


def test_zero_delay_takes_whatever_is_there() -> None:
    assert plan([Req(1, arrived=7.0)], BatchLimits(8), now=7.0) == Take((0,))


def test_preferred_size_is_taken_before_the_deadline() -> None:
    limits = BatchLimits(8, max_queue_delay=1.0, preferred_sizes=(4,))
    assert plan([Req(1), Req(3)], limits, now=0.1) == Take((0, 1))
    # other keys in between do not count towards the preferred size
    assert plan([Req(1), Req(3, "b"), Req(3)], limits, now=0.1) == Take((0, 2))
    # not yet a preferred size: keep waiting for the head's deadline
    assert plan([Req(1), Req(2)], limits, now=0.1) == Wait(1.0)


def test_passing_a_preferred_size_runs_that_size_at_once() -> None:
    # 2 was passed on the way to 3: run 2 now, the third waits for the next batch
    limits = BatchLimits(8, max_queue_delay=1.0, preferred_sizes=(2, 4))
    assert plan([Req(1), Req(1), Req(1)], limits, now=0.1) == Take((0, 1))


def test_a_burst_past_the_largest_preferred_size_is_cut_at_it() -> None:
    limits = BatchLimits(64, max_queue_delay=0.2, preferred_sizes=(4,))
    assert plan([Req(1)] * 5, limits, now=0.01) == Take((0, 1, 2, 3))


def test_at_the_deadline_cuts_at_the_longest_preferred_prefix() -> None:
    limits = BatchLimits(8, max_queue_delay=1.0, preferred_sizes=(2, 4))
    queue = [Req(1), Req(1), Req(1), Req(1, "b"), Req(1), Req(1)]
    # totals 1, 2, 3, 4, 5 over the "a" requests: cut after the fourth "a" (index 4)
    assert plan(queue, limits, now=1.0) == Take((0, 1, 2, 4))
    assert plan([Req(1), Req(1), Req(1)], limits, now=1.0) == Take((0, 1))


def test_when_full_cuts_at_the_longest_preferred_prefix() -> None:
    limits = BatchLimits(6, max_queue_delay=10.0, preferred_sizes=(3,))
    # 2 + 1 + 3 = 6 fills the batch; only the first 3 rows are a preferred size
    assert plan([Req(2), Req(1), Req(3)], limits, now=0.0) == Take((0, 1))


def test_when_blocked_cuts_at_the_longest_preferred_prefix() -> None:
    limits = BatchLimits(6, max_queue_delay=10.0, preferred_sizes=(2,))
    # 2 + 3 = 5, and the 4-row request does not fit: run now, cut to 2 rows
    assert plan([Req(2), Req(3), Req(4)], limits, now=0.0) == Take((0,))


def test_no_preferred_prefix_takes_everything_chosen() -> None:
    limits = BatchLimits(8, max_queue_delay=1.0, preferred_sizes=(4,))
    assert plan([Req(1), Req(2)], limits, now=1.0) == Take((0, 1))


_request = st.builds(
    Req,
    rows=st.integers(1, 4),
    key=st.sampled_from("ab"),
    arrived=st.floats(0.0, 1.0),
)


@settings(max_examples=300, deadline=None)
@given(
    queue=st.lists(_request, max_size=12).map(lambda q: sorted(q, key=lambda r: r.arrived)),
    max_batch_size=st.integers(4, 8),
    delay=st.floats(0.0, 1.0),
    preferred=st.lists(st.integers(1, 4), max_size=3, unique=True).map(tuple),
    now=st.floats(0.0, 3.0),
)
def test_any_plan_is_a_valid_batch(
    queue: list[Req], max_batch_size: int, delay: float, preferred: tuple[int, ...], now: float
) -> None:
    """Whatever the queue: the head runs first, with its own key only, in order, within the limit."""
    limits = BatchLimits(max_batch_size, delay, preferred)
    decision = plan(queue, limits, now)
    if not queue:
        assert decision == Wait(None)
        return
    head = queue[0]
    if isinstance(decision, Wait):
        assert decision.until == head.arrived + delay
        assert now < decision.until
        return
    indices = decision.indices
    assert indices[0] == 0
    assert list(indices) == sorted(set(indices))
    assert all(queue[i].key == head.key for i in indices)
    assert sum(queue[i].rows for i in indices) <= max_batch_size
    # no same-key request is skipped over: the batch is a prefix of the head's key
    same_key = [i for i, r in enumerate(queue) if r.key == head.key]
    assert list(indices) == same_key[: len(indices)]
    if now >= head.arrived + delay:
        # past the deadline nothing that fits is left behind, unless cut to a preferred size
        rows = sum(queue[i].rows for i in indices)
        rest = same_key[len(indices) :]
        assert not rest or rows in preferred or rows + queue[rest[0]].rows > max_batch_size


def test_a_head_larger_than_the_limit_runs_alone() -> None:
    """Validation refuses such requests; should one get through, it must not stall the queue."""
    limits = BatchLimits(max_batch_size=4)
    queue = [Req(6, "k", 0.0), Req(1, "k", 0.0)]
    assert plan(queue, limits, now=0.0) == Take((0,))


def test_requests_that_waited_out_a_busy_instance_get_the_delay_again_from_when_it_freed() -> None:
    """Half the clients queued behind a running batch; the other half are a round trip away."""
    queue = [Req(1, "a", 0.0), Req(1, "a", 0.5)]
    limits = BatchLimits(8, max_queue_delay=1.0)
    assert plan(queue, limits, now=6.0) == Take((0, 1))  # no free_since: the head's delay ran out long ago
    assert plan(queue, limits, now=6.0, free_since=5.9) == Wait(6.9)
    assert plan(queue, limits, now=6.9, free_since=5.9) == Take((0, 1))
    # a head that arrived after the instance freed counts from its own arrival, as before
    assert plan([Req(1, "a", 7.0)], limits, now=7.5, free_since=5.9) == Wait(8.0)
    # a full batch never waits
    assert plan([Req(8, "a", 0.0)], limits, now=6.0, free_since=5.9) == Take((0,))


def test_a_wait_ends_once_the_expected_rows_are_back() -> None:
    """The clients answered by the last batch are back: a closed loop sends no more."""
    limits = BatchLimits(16, max_queue_delay=1.0)
    back = [Req(2, "a", 5.0), Req(1, "a", 5.1), Req(1, "a", 5.2)]
    assert plan(back[:2], limits, now=5.2, free_since=5.0, expected=4) == Wait(6.0)
    assert plan(back, limits, now=5.2, free_since=5.0, expected=4) == Take((0, 1, 2))
    assert plan(back, limits, now=5.2, free_since=5.0, expected=3) == Take((0, 1, 2))  # more than expected
    # nothing expected (no batch ran yet): the delay rules alone
    assert plan(back, limits, now=5.2, free_since=5.0) == Wait(6.0)
    # rows of another key do not count toward the head's batch
    mixed = [Req(2, "a", 5.0), Req(2, "b", 5.1)]
    assert plan(mixed, limits, now=5.2, free_since=5.0, expected=4) == Wait(6.0)
