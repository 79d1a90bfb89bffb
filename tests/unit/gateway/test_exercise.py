"""Assembling exercise sessions from equipment messages: one test per thing real machines and networks do."""
from __future__ import annotations

import random

from gateway.exercise import Counters, Tally, by_session, fold_all
from gateway.models import DeviceKind, DeviceMessage, EquipmentSession, EquipmentTelemetry, EquipmentType

T0 = 1_767_250_000_000
RECEIVED = T0 + 5_000


def start(seq: int = 1, ts: int = T0, sid: str = "s1") -> DeviceMessage:
    return DeviceMessage("rower-01", DeviceKind.EQUIPMENT,
                         EquipmentSession(ts=ts, seq=seq, event="start", session_id=sid, equipment_type=EquipmentType.ROWER))


def end(seq: int, ts: int, sid: str = "s1", **totals: float) -> DeviceMessage:
    return DeviceMessage("rower-01", DeviceKind.EQUIPMENT, EquipmentSession(
        ts=ts, seq=seq, event="end", session_id=sid, equipment_type=EquipmentType.ROWER, **totals))


def reading(seq: int, second: int, count: int, hr: int = 100, power: int = 60, sid: str = "s1",
            ts: int | None = None) -> DeviceMessage:
    """`second` of the machine's own count (from its last reset); device time `ts`, by default T0 + second."""
    return DeviceMessage("rower-01", DeviceKind.EQUIPMENT, EquipmentTelemetry(
        ts=T0 + second * 1000 if ts is None else ts, seq=seq, session_id=sid, elapsed_s=second, count=count,
        distance_m=count * 5.0, energy_kcal=round(second * 0.1, 2), heart_rate=hr, power_w=power))


def workout(seconds: int = 60) -> list[DeviceMessage]:
    """start, one reading a second (a stroke every 3 s), end with the totals."""
    body = [reading(s + 1, s, s // 3, hr=90 + s % 20) for s in range(1, seconds + 1)]
    return [start(), *body, end(seconds + 2, T0 + seconds * 1000, elapsed_s=seconds, count=seconds // 3,
                                distance_m=seconds // 3 * 5.0, energy_kcal=round(seconds * 0.1, 2))]


def tally(messages: list[DeviceMessage], batch: int = 1_000) -> Tally:
    t = None
    for i in range(0, len(messages), batch):
        t = fold_all(t, "rower-01", "s1", messages[i:i + batch], RECEIVED)
    assert t is not None
    return t


def test_a_whole_session_has_its_totals_heart_rate_and_power():
    t = tally(workout(60))
    assert t.closed_by == "end" and t.equipment_type == "rower"
    assert t.totals == Counters(60, 20, 100.0, 6.0)
    assert (t.start_ts, t.end_ts, t.duration_s) == (T0, T0 + 60_000, 60)
    hrs = [90 + s % 20 for s in range(1, 61)]
    assert t.hr_max == max(hrs) and t.hr_avg == round(sum(hrs) / 60, 1) and t.power_avg == 60


def test_readings_out_of_order_give_the_same_session_as_in_order():
    messages = workout(60)
    shuffled = [messages[0], *random.Random(3).sample(messages[1:-1], 60), messages[-1]]
    assert tally(shuffled, batch=7).totals == tally(messages).totals
    assert tally(shuffled, batch=7).hr_avg == tally(messages).hr_avg


def test_the_end_arriving_before_the_last_readings_closes_the_session_with_the_right_totals():
    messages = workout(30)
    t = tally([messages[0], *messages[1:25], messages[-1], *messages[25:-1]])
    assert t.closed_by == "end" and t.totals == Counters(30, 10, 50.0, 3.0)


def test_a_reading_repeated_under_a_new_seq_counts_once():
    messages = workout(10)
    again = reading(99, 10, 10 // 3)   # the machine resent its last reading with a new sequence number
    assert tally([*messages[:-1], again, messages[-1]]).hr_n == tally(messages).hr_n


def test_a_reboot_mid_session_keeps_the_totals_growing_and_counts_nothing_twice():
    before = [start(), *[reading(s + 1, s, s) for s in range(1, 41)]]          # 40 s, 40 strokes
    # Power cut: the machine counts from 0 again under the same session id, seq from 1; its clock goes on.
    after = [reading(s, s, s, ts=T0 + (45 + s) * 1000) for s in range(1, 21)]  # 20 s, 20 strokes more
    t = tally([*before, *after, end(21, T0 + 66_000, elapsed_s=20, count=20)])
    assert t.totals.count == 60 and t.totals.elapsed_s == 60
    assert t.totals.distance_m == 300.0


def test_a_late_reading_from_before_the_reboot_still_adds_what_it_shows():
    before = [start(), *[reading(s + 1, s, s) for s in range(1, 40)]]           # the 40th is held up
    after = [reading(s, s, s, ts=T0 + (45 + s) * 1000) for s in range(1, 11)]
    late = reading(41, 40, 40)
    assert tally([*before, *after, late]).totals.count == 50
    assert tally([*before, late, *after]).totals.count == 50


def test_a_session_without_an_end_stays_open_with_what_it_had():
    t = tally(workout(30)[:-1])
    assert t.closed_by is None and t.end_ts is None and t.totals.count == 10


def test_telemetry_before_the_start_message_still_makes_one_session():
    messages = workout(20)
    t = tally([*messages[1:6], messages[0], *messages[6:]])
    assert t.start_ts == T0 and t.equipment_type == "rower" and t.totals.count == 6


def test_an_end_without_totals_keeps_the_readings_totals():
    t = tally([*workout(30)[:-1], end(40, T0 + 31_000)])
    assert t.closed_by == "end" and t.totals.count == 10


def test_a_stored_tally_folds_on_as_if_never_stored():
    messages = workout(50)
    first = tally(messages[:20])
    s = first.state()
    restored = Tally.restore("rower-01", "s1", first.start_ts, first.last_received_ms, first.equipment_type,
                             first.end_ts, first.closed_by, first.hr_max, s)
    assert fold_all(restored, "rower-01", "s1", messages[20:], RECEIVED) == tally(messages)


def test_a_batch_is_grouped_per_session_in_device_time_order():
    a, b = reading(2, 2, 1), reading(1, 1, 0)
    other = reading(1, 1, 0, sid="s2")
    groups = by_session([a, other, b])
    assert list(groups) == [("rower-01", "s1"), ("rower-01", "s2")]
    assert [m.payload.seq for m in groups[("rower-01", "s1")]] == [1, 2]
