"""Reconnect backoff: exponential with full jitter, capped."""
from __future__ import annotations

from itertools import islice

import pytest

from gateway import mqtt_edge
from gateway.mqtt_edge import backoff_delays


def first(n: int, delays) -> list[float]:
    return list(islice(delays, n))


def test_the_longest_possible_delay_doubles_each_attempt_up_to_the_cap(monkeypatch):
    monkeypatch.setattr(mqtt_edge.random, "uniform", lambda low, high: high)
    assert first(8, backoff_delays(0.5, 30.0)) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_shortest_possible_delay_is_half_the_longest(monkeypatch):
    monkeypatch.setattr(mqtt_edge.random, "uniform", lambda low, high: low)
    assert first(8, backoff_delays(0.5, 30.0)) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]


@pytest.mark.parametrize("attempt", range(12))
def test_every_delay_lies_between_half_and_all_of_its_step(attempt):
    step = min(0.5 * 2**attempt, 30.0)
    for _ in range(200):
        delay = first(attempt + 1, backoff_delays(0.5, 30.0))[-1]
        assert step / 2 <= delay <= step


def test_delays_are_jittered_so_reconnecting_gateways_spread_out():
    assert len({next(backoff_delays(1.0, 30.0)) for _ in range(20)}) > 1


def test_the_delays_never_run_out():
    assert len(first(1000, backoff_delays(0.5, 30.0))) == 1000


def test_no_delay_exceeds_the_cap_even_when_the_first_step_is_above_it():
    assert max(first(5, backoff_delays(60.0, 30.0))) <= 30.0
