"""Exponential backoff: doubling steps up to a cap, jittered as each retry loop wants."""
from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from gateway.backoff import Backoff, exponential_s, jitter_down_to_half, jitter_either_way

LONGEST, SHORTEST = (lambda: 1.0), (lambda: 0.0)   # the ends of random.random()'s range


def first(n: int, backoff: Backoff) -> list[float]:
    return [backoff.next_s() for _ in range(n)]


def reconnect(base_s: float = 0.5, max_s: float = 30.0, rand: Callable[[], float] = random.random) -> Backoff:
    """The MQTT reconnect and spool replay backoff: jittered down to half of each step."""
    return Backoff(base_s, max_s, jitter=jitter_down_to_half, rand=rand)


# -- the steps -----------------------------------------------------------------------

def test_the_step_doubles_after_each_failed_attempt_up_to_the_cap():
    assert [exponential_s(n, 0.5, 30.0) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_before_the_first_attempt_the_step_is_the_base():
    assert exponential_s(0, 1.0, 8.0) == 1.0


def test_a_step_never_exceeds_the_cap_even_when_the_base_is_above_it():
    assert exponential_s(1, 60.0, 30.0) == 30.0


def test_a_loop_failing_for_days_stays_at_the_cap_without_overflowing():
    assert exponential_s(100_000, 0.5, 30.0) == 30.0


# -- jitter --------------------------------------------------------------------------

def test_jitter_down_to_half_spans_half_the_step_to_all_of_it():
    assert [jitter_down_to_half(8.0, r) for r in (0.0, 0.5, 1.0)] == [4.0, 6.0, 8.0]


def test_jitter_either_way_spans_the_step_plus_or_minus_its_share():
    assert [jitter_either_way(10.0, r, 0.2) for r in (0.0, 0.5, 1.0)] == [8.0, 10.0, 12.0]


# -- a retry loop's backoff: reconnect (jittered down to half) ----------------------

def test_the_longest_possible_delay_doubles_each_attempt_up_to_the_cap():
    assert first(8, reconnect(rand=LONGEST)) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_shortest_possible_delay_is_half_the_longest():
    assert first(8, reconnect(rand=SHORTEST)) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]


@pytest.mark.parametrize("attempt", range(12))
def test_every_delay_lies_between_half_and_all_of_its_step(attempt):
    step = min(0.5 * 2**attempt, 30.0)
    for _ in range(200):
        delay = first(attempt + 1, reconnect())[-1]
        assert step / 2 <= delay <= step


def test_delays_are_jittered_so_reconnecting_gateways_spread_out():
    assert len({reconnect(1.0, 30.0).next_s() for _ in range(20)}) > 1


def test_the_delays_never_run_out():
    assert len(first(1000, reconnect())) == 1000


def test_no_delay_exceeds_the_cap_even_when_the_first_step_is_above_it():
    assert max(first(5, reconnect(60.0, 30.0))) <= 30.0


def test_after_a_reset_the_delays_start_again_from_the_base():
    backoff = reconnect(rand=LONGEST)
    first(5, backoff)
    backoff.reset()
    assert first(3, backoff) == [0.5, 1.0, 2.0]


# -- without jitter (a batch retried in ingest) ----------------------------------------

def test_without_jitter_each_delay_is_exactly_its_step():
    assert first(8, Backoff(0.5, 30.0)) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_without_jitter_no_random_draw_is_made():
    def no_draw() -> float:
        raise AssertionError("drew a random number")

    assert first(3, Backoff(0.5, 30.0, rand=no_draw)) == [0.5, 1.0, 2.0]
