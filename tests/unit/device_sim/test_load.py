"""Load mode's stream mix: the field's cadence as one device's order of streams, and the rate it makes."""
from __future__ import annotations

from collections import Counter

import orjson
import pytest

from device_sim.load import EVEN_MIX, FIELD_CADENCE_S, cadence_mix, cadence_rate, load_payload

TS = 1_767_225_600_000  # 2026-01-01T00:00Z


def test_the_field_cadence_sends_six_positions_three_health_and_two_status_each_half_hour():
    mix = cadence_mix(FIELD_CADENCE_S)
    assert Counter(mix) == {"location": 6, "health": 3, "status": 2}
    assert mix[:4] == ("location", "health", "status", "location")   # all three at the start, then 5 min on


def test_a_sends_order_follows_time_across_the_cycle():
    assert cadence_mix({"location": 2, "status": 3}) == ("location", "status", "location", "status", "location")


def test_a_million_watches_at_the_field_cadence_send_about_six_thousand_a_second():
    assert cadence_rate(1_000_000, FIELD_CADENCE_S) == pytest.approx(1_000_000 * 11 / 1800)


@pytest.mark.parametrize("bad", [{}, {"location": 0}])
def test_a_cadence_needs_positive_periods(bad):
    with pytest.raises(ValueError):
        cadence_mix(bad)


def test_the_default_mix_is_status_location_health_by_seq():
    assert [load_payload(7, seq, TS)[0] for seq in (3, 4, 5)] == list(EVEN_MIX)


def test_a_payload_follows_the_mix_and_carries_its_seq():
    mix = cadence_mix(FIELD_CADENCE_S)
    streams = [load_payload(7, seq, TS, mix)[0] for seq in range(1, 12)]
    assert Counter(streams) == Counter(mix)
    stream, body = load_payload(7, 12, TS, mix)
    assert stream == mix[12 % 11] and orjson.loads(body)["seq"] == 12


def test_a_stream_load_mode_cannot_send_is_refused():
    with pytest.raises(ValueError):
        load_payload(0, 1, TS, ("sos",))
