"""Detection: rules over per-device state, staged until the caller's transaction committed."""
from __future__ import annotations

import tracemalloc

from alerts.config import AlertSettings
from alerts.detection import LAYOUTS, Detection
from alerts.directory import parse_community
from alerts.rules import EquipmentState, WatchState
from alerts.store import SavedState
from alerts.vocabulary import AlertType
from tests.unit.alert_support import COMMUNITY, DAY, msg


def detection(**settings) -> Detection:
    return Detection(AlertSettings(**settings), parse_community(COMMUNITY))


def as_saved(rows: list[tuple[str, str, str]]) -> list[SavedState]:
    """take_changed's rows as DeviceStateStore.load gives them back."""
    return [SavedState(device_id, kind, state, LAYOUTS[kind]) for device_id, kind, state in rows]


def test_state_moves_only_when_the_staged_verdict_is_applied():
    d = detection()
    staged = d.run([msg("w1", "status", 1, DAY, battery=80, worn=True)], DAY)
    assert len(d.watches) == 0                   # the caller's transaction failed: nothing happened
    d.apply(staged)
    assert d.watches["w1"].last_seen_ms == DAY


def test_a_key_twice_in_one_slice_is_judged_once():
    d = detection()
    sos = msg("w1", "sos", 1, DAY)
    staged = d.run([sos, sos], DAY)
    assert [(m.key, [f.alert_type for f in found]) for m, found in staged.raised] == [(sos.key, [AlertType.SOS])]


def test_a_message_from_a_clock_ahead_is_heard_and_its_press_timed_by_the_gateway():
    d = detection()
    with d.lock:
        [press] = d.clock_ahead(msg("w1", "sos", 1, DAY + 3_600_000), DAY)
    assert (press.alert_type, press.at_ms) == (AlertType.SOS, DAY)
    assert d.watches["w1"].last_seen_ms == DAY


def test_the_clock_wrong_finding_comes_once_at_its_count_and_a_message_on_time_ends_the_episode():
    d = detection(clock_wrong_count=2)
    ahead = [msg("w1", "status", n, DAY + 3_600_000 + n, battery=80, worn=True) for n in range(1, 5)]
    with d.lock:
        found = [d.clock_ahead(m, DAY) for m in ahead]
    assert [[f.alert_type for f in fs] for fs in found] == [[], [AlertType.DEVICE_CLOCK_WRONG], [], []]
    d.apply(d.run([msg("w1", "status", 9, DAY, battery=80, worn=True)], DAY))
    with d.lock:
        d.clock_ahead(ahead[0], DAY)
        assert [f.alert_type for f in d.clock_ahead(ahead[1], DAY)] == [AlertType.DEVICE_CLOCK_WRONG]


def test_saved_state_is_restored_with_a_restart_grace_and_unheard_devices_are_marked():
    d = detection(restart_grace_s=60)
    d.apply(d.run([msg("w1", "status", 1, DAY, battery=80, worn=True)], DAY))
    _, rows = d.take_changed()
    again = detection(restart_grace_s=60)
    again.restore(as_saved(rows), [("w1", "watch"), ("w2", "watch")], DAY + 1000)
    assert again.watches["w1"].last_seen_ms == DAY and again.watches["w1"].quiet_until_ms == DAY + 61_000
    assert again.watches["w2"].heard is False


def test_a_restore_shares_one_never_heard_state_and_keys_states_by_the_registrys_own_id_strings():
    d = detection()
    d.apply(d.run([msg("w-000001", "status", 1, DAY, battery=80, worn=True)], DAY))
    _, saved = d.take_changed()
    registered = [("".join(["w-", f"{i:06d}"]), "watch") for i in range(100_000)]   # strings of their own
    again = detection()
    tracemalloc.start()
    try:
        again.restore(as_saved(saved), registered, DAY + 1000)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used < 8 * 2**20, f"{used / 2**20:.1f} MiB for 100,000 devices never heard"   # a state each: over 20 MiB
    assert again.watches["w-000001"].last_seen_ms == DAY and again.watches["w-000002"].heard is False
    [key] = [k for k in again.watches if k == "w-000001"]
    assert key is registered[1][0]


def test_a_state_is_saved_as_an_array_of_its_values_and_restored_whole():
    d = detection()
    d.apply(d.run([msg("w1", "status", 1, DAY, battery=80, worn=True), msg("m1", "session", 1, DAY, session_id="s1",
                                                                           event="start", equipment_type="rower")], DAY))
    _, rows = d.take_changed()
    assert sorted((device_id, kind, state[0]) for device_id, kind, state in rows) == [
        ("m1", "equipment", "["), ("w1", "watch", "[")]
    again = detection(restart_grace_s=60)
    again.restore(as_saved(rows), [], DAY + 1000)
    assert again.watches["w1"] == d.watches["w1"]._replace(quiet_until_ms=DAY + 61_000)
    assert again.equipment["m1"] == d.equipment["m1"]._replace(quiet_until_ms=DAY + 61_000)


def test_a_state_saved_by_another_version_is_restored_by_field_name():
    """An object (saved before arrays), and an array whose fields were since added to and removed."""
    d = detection(restart_grace_s=60)
    d.restore([
        SavedState("w1", "watch", '{"last_seen_ms": 5000, "worn": true, "gone_since": 7}', None),
        SavedState("w2", "watch", "[6000, 3, true]", ("last_seen_ms", "gone_since", "battery_fired")),
    ], [], DAY)
    assert d.watches["w1"] == WatchState(last_seen_ms=5000, worn=True, quiet_until_ms=DAY + 60_000)
    assert d.watches["w2"] == WatchState(last_seen_ms=6000, battery_fired=True, quiet_until_ms=DAY + 60_000)


def _silent_fleet(d: Detection, watches: int, machines: int = 0) -> int:
    """Worn watches (and machines) last heard at DAY; returns a time at which all of them are silent."""
    for n in range(watches):
        d.watches[f"w{n}"] = WatchState(last_seen_ms=DAY, worn=True, worn_changed_ms=DAY)
    for n in range(machines):
        d.equipment[f"m{n}"] = EquipmentState(last_seen_ms=DAY)
    return DAY + 7 * 24 * 3_600_000


def test_a_small_fleet_is_swept_whole_on_every_tick():
    d = detection(silence_sweep_s=30)
    later = _silent_fleet(d, 50)
    assert len({s.device_id for s in d.scan_silence(later)}) == 50
    assert len({s.device_id for s in d.scan_silence(later)}) == 50   # not applied: still silent next tick


def test_a_large_fleet_is_swept_a_share_per_tick_and_every_device_within_the_sweep():
    """25,000 watches and 5,000 machines, a tick a second, a sweep of at most 3 s: 10,000 devices per tick."""
    d = detection(tick_interval_s=1, silence_sweep_s=3)
    later = _silent_fleet(d, 25_000, 5_000)
    ticks = [d.scan_silence(later) for _ in range(3)]
    assert [len(t) for t in ticks] == [10_000, 10_000, 10_000]
    seen = [s.device_id for t in ticks for s in t]
    assert len(set(seen)) == 30_000   # each device once per sweep, the machines after the watches
    assert {s.finding.alert_type for s in ticks[2]} >= {AlertType.WATCH_SILENT, AlertType.EQUIPMENT_SILENT}
    assert len(d.scan_silence(later)) == 10_000   # the next sweep starts over


def test_a_device_known_after_a_sweep_began_is_in_the_next_one():
    d = detection(tick_interval_s=1, silence_sweep_s=2)
    later = _silent_fleet(d, 20_000)
    first = d.scan_silence(later)
    d.watches["late"] = d.watches["w0"]
    second = d.scan_silence(later)
    assert "late" not in {s.device_id for s in first + second}
    next_sweep = d.scan_silence(later) + d.scan_silence(later)
    assert "late" in {s.device_id for s in next_sweep}
