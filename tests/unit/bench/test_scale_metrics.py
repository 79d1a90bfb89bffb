"""What bench/scale.py reads from the gateway's /metrics: messages received, inbox, lag and the ack-delay histogram."""
from __future__ import annotations

import math

import pytest

from bench.scale import Metrics, Sample, bucket_percentile, parse_metrics, stage_shares
from bench.sos_latency import percentile

TEXT = """\
# HELP eldercare_messages_total Device messages by lane
eldercare_messages_total{lane="critical",outcome="received"} 3.0
eldercare_messages_total{lane="critical",outcome="accepted"} 3.0
eldercare_messages_total{lane="telemetry",outcome="received"} 1200.0
eldercare_lane_inbox_messages{lane="critical"} 0.0
eldercare_lane_inbox_messages{lane="telemetry"} 40.0
eldercare_lane_lag_seconds{lane="critical"} 0.01
eldercare_lane_lag_seconds{lane="telemetry"} 0.25
eldercare_ingest_ack_delay_seconds_bucket{lane="critical",le="0.5"} 9.0
eldercare_ingest_ack_delay_seconds_bucket{lane="telemetry",le="0.5"} 90.0
eldercare_ingest_ack_delay_seconds_bucket{lane="telemetry",le="1.0"} 99.0
eldercare_ingest_ack_delay_seconds_bucket{lane="telemetry",le="+Inf"} 100.0
eldercare_ingest_stage_seconds_total{lane="critical",stage="store"} 9.0
eldercare_ingest_stage_seconds_total{lane="telemetry",stage="rules"} 2.0
eldercare_ingest_stage_seconds_total{lane="telemetry",stage="store"} 3.5
"""


def test_received_and_inbox_add_up_the_lanes_and_lag_is_the_worst_lanes():
    m = parse_metrics(TEXT)
    assert (m.received, m.inbox, m.lag_s) == (1203, 40, 0.25)
    assert m.ack_buckets == {0.5: 90.0, 1.0: 99.0, float("inf"): 100.0}


def test_the_p99_bound_counts_only_the_batches_between_two_scrapes():
    after = parse_metrics(TEXT).ack_buckets
    assert bucket_percentile({}, after, 99) == 1.0
    assert bucket_percentile({0.5: 0.0, 1.0: 0.0, float("inf"): 0.0}, after, 90) == 0.5
    # Of the 10 batches since the first scrape, 9 took up to 1 s and one longer.
    assert bucket_percentile({0.5: 90.0, 1.0: 90.0, float("inf"): 90.0}, after, 99) == float("inf")


def test_no_batches_between_scrapes_has_no_percentile():
    after = parse_metrics(TEXT).ack_buckets
    assert bucket_percentile(after, after, 99) is None
    assert bucket_percentile({}, {}, 99) is None


def test_percentile_of_samples():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert math.isnan(percentile([], 99))


def test_the_telemetry_lanes_time_by_step_is_read_and_the_critical_lanes_left_out():
    assert parse_metrics(TEXT).stages == {"rules": 2.0, "store": 3.5}


def sample(t: float, lag_s: float, rules: float, store: float) -> Sample:
    return Sample(t, 0.5, 0, Metrics(0, 0, lag_s, {}, {"rules": rules, "store": store}), {})


def test_shares_of_a_second_by_step_over_all_seconds_and_over_the_slow_ones_only():
    samples = [sample(0, 0.1, 0.0, 0.0), sample(1, 0.2, 0.1, 0.2), sample(2, 1.5, 0.2, 0.9), sample(3, 0.3, 0.3, 1.0)]
    everything = stage_shares(samples)
    assert everything == pytest.approx({"rules": 0.1, "store": 1.0 / 3})
    slow = stage_shares(samples, slow_lag_s=1.0)   # only the second that ended with lag 1.5 s
    assert slow == pytest.approx({"rules": 0.1, "store": 0.7})
    assert stage_shares(samples[:1]) == {} and stage_shares(samples, slow_lag_s=5.0) == {}
