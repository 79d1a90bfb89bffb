"""What bench/scale.py reads from the gateway's /metrics: messages received, inbox, lag and the ack-delay histogram."""
from __future__ import annotations

import math

from bench.scale import bucket_percentile, parse_metrics
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
