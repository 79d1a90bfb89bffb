"""How bench/sos_latency.py turns press latencies into p50/p95/p99/max."""
from __future__ import annotations

import pytest

from bench.sos_latency import Run, percentile, rows, summarize


def test_percentiles_are_nearest_ranks_of_the_sorted_values() -> None:
    values = [float(v) for v in range(100, -1, -1)]   # 100 .. 0, unsorted on purpose: rank p is the value p
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert (percentile(values, 0), percentile(values, 100)) == (0.0, 100.0)


def test_the_summary_of_a_thousand_presses_names_its_tail() -> None:
    latencies = [10.0] * 985 + [200.0] * 10 + [400.0] * 4 + [900.0]
    s = summarize(latencies)
    assert (s.presses, s.p50, s.p95, s.p99, s.max) == (1000, 10.0, 10.0, 200.0, 900.0)
    assert s.mean == pytest.approx((9850 + 2000 + 1600 + 900) / 1000)


def test_one_press_is_every_percentile_and_none_is_an_error() -> None:
    s = summarize([42.0])
    assert (s.p50, s.p95, s.p99, s.max, s.mean) == (42.0, 42.0, 42.0, 42.0, 42.0)
    with pytest.raises(ValueError):
        summarize([])


def test_the_table_shows_the_floor_an_idle_subscriber_measured_in_the_same_run() -> None:
    run = Run("gateway", summarize([20.0] * 99 + [80.0]), None, floor=summarize([2.0] * 99 + [30.0]))
    table = dict(rows(run))
    assert table["p99 (target ≤ 50 ms, issue 12)"] == "20.0 ms"
    assert table["floor: publish -> an idle subscriber's callback, p50 / p95 / p99 / max"] == "2.0 / 2.0 / 2.0 / 30.0 ms"
    assert not any(k.startswith("floor") for k in dict(rows(Run("gateway", run.summary, None))))
