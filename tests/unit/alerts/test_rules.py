"""Each rule on its own: pure functions of state, message and time."""
from __future__ import annotations

import itertools

import pytest

from alerts.config import AlertSettings
from alerts.directory import parse_community
from alerts.rules import (
    EquipmentState,
    RuleContext,
    WatchState,
    detect_battery_low,
    detect_button,
    detect_equipment,
    detect_geofence_exit,
    detect_heart_rate,
    detect_spo2_low,
    equipment_tick,
    equipment_tick_candidates,
    watch_seen,
    watch_tick,
    watch_tick_candidates,
)
from tests.unit.alert_support import COMMUNITY, DAY, INSIDE, NIGHT, OUTSIDE, local_ms, msg

DIRECTORY = parse_community(COMMUNITY)
CTX = RuleContext.of(AlertSettings(), DIRECTORY)
WANG = DIRECTORY.wearer("w1")


def run(detector, messages, state=None, resident=WANG, ctx=CTX):
    state = state or WatchState()
    found = []
    for m in messages:
        state, f = detector(state, m, resident, ctx)
        found.append(f)
    return state, found


@pytest.mark.parametrize("stream,kind,severity", [("sos", "sos", "red"), ("fall", "fall", "red"),
                                                   ("service_call", "service_call", "yellow")])
def test_button_press_is_a_finding_with_its_grade_and_position(stream, kind, severity):
    _, [f] = run(detect_button, [msg("w1", stream, 1, DAY, lat=31.5, lon=121.5)])
    assert (f.alert_type, f.severity, f.lat, f.lon) == (kind, severity, 31.5, 121.5)


def test_sos_without_a_fix_uses_the_last_known_position():
    _, [f] = run(detect_button, [msg("w1", "sos", 1, DAY)], state=WatchState(lat=31.1, lon=121.1))
    assert (f.lat, f.lon) == (31.1, 121.1)


def test_geofence_exit_waits_for_the_dwell_time():
    out = [msg("w1", "location", i, DAY + s * 1000, lat=OUTSIDE[0], lon=OUTSIDE[1], accuracy_m=10)
           for i, s in enumerate((0, 60, 119, 120, 180))]
    _, found = run(detect_geofence_exit, out)
    assert [f is not None for f in found] == [False, False, False, True, False]
    assert found[3].severity == "orange"


def fixes(points, accuracy_m=10.0, start=DAY):
    """Location messages at (seconds after `start`, (lat, lon))."""
    return [msg("w1", "location", i, start + s * 1000, lat=p[0], lon=p[1], accuracy_m=accuracy_m)
            for i, (s, p) in enumerate(points)]


def test_a_return_confirmed_by_enough_inside_fixes_restarts_the_dwell():
    pts = [(0, OUTSIDE), (100, INSIDE), (110, INSIDE), (150, OUTSIDE), (260, OUTSIDE), (270, OUTSIDE)]
    _, found = run(detect_geofence_exit, fixes(pts))
    # 0 -> 100 s outside is cut short by two inside fixes; 150 s -> 270 s is the first full 120 s outside.
    assert [f is not None for f in found] == [False, False, False, False, False, True]


def test_one_stray_inside_fix_does_not_reset_the_dwell():
    pts = [(0, OUTSIDE), (60, INSIDE), (90, OUTSIDE), (120, OUTSIDE)]
    _, found = run(detect_geofence_exit, fixes(pts))
    assert [f is not None for f in found] == [False, False, False, True]


def test_a_stray_inside_fix_after_the_alert_does_not_let_the_same_wander_alert_twice():
    pts = [(0, OUTSIDE), (120, OUTSIDE), (150, INSIDE), (160, OUTSIDE), (400, OUTSIDE)]
    _, found = run(detect_geofence_exit, fixes(pts))
    assert [f is not None for f in found] == [False, True, False, False, False]


def test_lbs_fixes_whose_accuracy_circle_overlaps_the_fence_do_not_count_as_outside():
    # The fence is 200 m around home; OUTSIDE is about 1.1 km north, well within a 1.5 km LBS fix.
    _, found = run(detect_geofence_exit, fixes([(0, OUTSIDE), (300, OUTSIDE), (600, OUTSIDE)], accuracy_m=1500))
    assert found == [None, None, None]


def test_a_fix_whose_whole_accuracy_circle_is_outside_counts():
    _, found = run(detect_geofence_exit, fixes([(0, OUTSIDE), (120, OUTSIDE)], accuracy_m=500))
    assert found[1] is not None


def test_an_orange_wander_still_going_on_when_night_begins_is_raised_to_red_once():
    evening = local_ms(21, 50)
    state, found = run(detect_geofence_exit, fixes([(0, OUTSIDE), (120, OUTSIDE)], start=evening))
    assert found[1].severity == "orange"
    assert watch_tick("w1", state, local_ms(21, 59), CTX)[1] is None
    state, f = watch_tick("w1", state, local_ms(22, 1), CTX)
    assert (f.alert_type, f.severity) == ("geofence_exit", "red")
    assert watch_tick("w1", state, local_ms(22, 2), CTX)[1] is None


def test_a_wander_that_ended_before_night_is_not_raised_at_night():
    evening = local_ms(21, 0)
    state, _ = run(detect_geofence_exit, fixes([(0, OUTSIDE), (120, OUTSIDE), (200, INSIDE), (210, INSIDE)], start=evening))
    assert watch_tick("w1", state, local_ms(22, 30), CTX)[1] is None


def test_geofence_exit_at_night_is_red():
    out = [msg("w1", "location", i, NIGHT + s * 1000, lat=OUTSIDE[0], lon=OUTSIDE[1], accuracy_m=10)
           for i, s in enumerate((0, 120))]
    _, found = run(detect_geofence_exit, out)
    assert found[1].severity == "red"


@pytest.mark.parametrize("hour,night", [(21, False), (22, True), (3, True), (5, True), (6, False)])
def test_night_hours_wrap_past_midnight(hour, night):
    assert CTX.night(local_ms(hour, 0)) is night


def test_polygon_geofence():
    triangle = [[31.0, 121.0], [31.0, 122.0], [32.0, 122.0]]
    poly = {**COMMUNITY["residents"][0], "geofence": {"shape": "polygon", "points": triangle}}
    resident = parse_community({**COMMUNITY, "residents": [poly]}).wearer("w1")
    inside = msg("w1", "location", 1, DAY, lat=31.2, lon=121.9, accuracy_m=5)
    state, _ = run(detect_geofence_exit, [inside], resident=resident)
    assert state.outside_since_ms is None
    state, _ = run(detect_geofence_exit, [msg("w1", "location", 2, DAY, lat=31.8, lon=121.1, accuracy_m=5)], resident=resident)
    assert state.outside_since_ms == DAY
    # About 1.1 km beyond the polygon's southern edge: a 1.5 km fix overlaps it, a 500 m fix does not.
    south = dict(lat=30.99, lon=121.5)
    state, _ = run(detect_geofence_exit, [msg("w1", "location", 3, DAY, accuracy_m=1500, **south)], resident=resident)
    assert state.outside_since_ms is None
    state, _ = run(detect_geofence_exit, [msg("w1", "location", 4, DAY, accuracy_m=500, **south)], resident=resident)
    assert state.outside_since_ms == DAY


def test_heart_rate_needs_consecutive_readings_outside_range():
    readings = [130, 130, 90, 130, 130, 130, 130]
    _, found = run(detect_heart_rate, [msg("w1", "health", i, DAY + i, heart_rate=hr) for i, hr in enumerate(readings)])
    assert [f is not None for f in found] == [False, False, False, False, False, True, False]


def test_heart_rate_uses_default_range_without_resident():
    _, found = run(detect_heart_rate, [msg("x", "health", i, DAY, heart_rate=125) for i in range(3)], resident=None)
    assert found[2] is not None and "50-120" in found[2].detail


def test_spo2_needs_consecutive_readings_below_the_threshold():
    readings = [90, 89, 92, 89, 88]
    _, found = run(detect_spo2_low, [msg("w1", "health", i, DAY + i, spo2=v) for i, v in enumerate(readings)])
    assert [f is not None for f in found] == [False, False, False, False, True]
    assert found[4].alert_type == "spo2_low" and "below 90%" in found[4].detail


def test_spo2_latches_once_per_episode_like_heart_rate():
    readings = [85, 85, 85, 84, 86, 95, 85, 85]
    _, found = run(detect_spo2_low, [msg("w1", "health", i, DAY + i, spo2=v) for i, v in enumerate(readings)])
    assert [f is not None for f in found] == [False, True, False, False, False, False, False, True]


def test_spo2_uses_the_residents_own_threshold():
    copd = {**COMMUNITY["residents"][0], "spo2_threshold": 86}
    resident = parse_community({**COMMUNITY, "residents": [copd]}).wearer("w1")
    low_for_most = [msg("w1", "health", i, DAY + i, spo2=88) for i in range(3)]
    assert run(detect_spo2_low, low_for_most, resident=resident)[1] == [None, None, None]
    _, found = run(detect_spo2_low, [msg("w1", "health", i, DAY + i, spo2=85) for i in range(2)], resident=resident)
    assert found[1] is not None and "below 86%" in found[1].detail


def test_battery_low_once_per_episode_and_not_while_charging():
    batt = [(16, False), (15, False), (10, False), (10, True), (50, False), (12, False)]
    ms = [msg("w1", "status", i, DAY, battery=b, worn=True, charging=c) for i, (b, c) in enumerate(batt)]
    _, found = run(detect_battery_low, ms)
    assert [f is not None for f in found] == [False, True, False, False, False, True]


def test_overexertion_uses_community_default_age_for_shared_equipment():
    # default age 70 -> limit 0.85 * 150 = 127.5
    state = EquipmentState()
    tel = dict(session_id="s1", elapsed_s=10, count=5, energy_kcal=1.0)
    state, f = detect_equipment(state, msg("eq-1", "telemetry", 1, DAY, heart_rate=127, **tel), DAY, CTX)
    assert f is None
    state, f = detect_equipment(state, msg("eq-1", "telemetry", 2, DAY, heart_rate=128, **tel), DAY, CTX)
    assert f.alert_type == "overexertion" and "age 70" in f.detail


def test_overexertion_fires_once_per_crossing_not_once_per_second():
    tel = dict(session_id="s1", elapsed_s=10, count=5, energy_kcal=1.0)
    state, fired = EquipmentState(), []
    for seq, hr in enumerate([128, 135, 140, 120, 130, 131], start=1):
        state, f = detect_equipment(state, msg("eq-1", "telemetry", seq, DAY, heart_rate=hr, **tel), DAY, CTX)
        fired.append(f is not None)
    # above, still above, still above, back under, above again, still above
    assert fired == [True, False, False, False, True, False]


def test_overexertion_uses_assigned_residents_age():
    # resident age 80 -> limit 119
    tel = dict(session_id="s1", elapsed_s=10, count=5, energy_kcal=1.0, heart_rate=120)
    _, f = detect_equipment(EquipmentState(), msg("eq-home", "telemetry", 1, DAY, **tel), DAY, CTX)
    assert f is not None and "age 80" in f.detail


def test_worn_watch_silent_longer_than_allowed_is_orange_once():
    state = watch_seen(WatchState(), msg("w1", "status", 1, DAY, battery=80, worn=True), DAY)
    assert watch_tick("w1", state, DAY + 900_000, CTX)[1] is None
    state, f = watch_tick("w1", state, DAY + 900_001, CTX)
    assert f.alert_type == "watch_silent" and f.severity == "orange"
    assert watch_tick("w1", state, DAY + 2_000_000, CTX)[1] is None


def reporting(every_s: float, times: int, worn: bool = True) -> WatchState:
    """A watch's state after `times` status reports `every_s` apart, the last at DAY."""
    state = WatchState()
    for i in range(times):
        at = DAY - int((times - 1 - i) * every_s * 1000)
        state = watch_seen(state, msg("w1", "status", i, at, battery=80, worn=worn), at)
    return state


def test_a_watch_reporting_every_minute_is_silent_after_the_floor_not_the_global_900_s():
    state = reporting(60, 10)
    assert watch_tick("w1", state, DAY + 300_000, CTX)[1] is None
    assert watch_tick("w1", state, DAY + 300_001, CTX)[1].alert_type == "watch_silent"


def test_a_watch_reporting_every_ten_minutes_gets_four_intervals():
    state = reporting(600, 10)
    assert watch_tick("w1", state, DAY + 2_400_000, CTX)[1] is None
    assert watch_tick("w1", state, DAY + 2_400_001, CTX)[1] is not None


def test_a_watch_reporting_hourly_is_capped_at_the_ceiling():
    state = reporting(3600, 10)
    assert watch_tick("w1", state, DAY + 3_600_001, CTX)[1] is not None


def test_a_watch_whose_cadence_is_not_learned_yet_uses_watch_silent_s():
    state = reporting(60, 3)
    assert watch_tick("w1", state, DAY + 900_000, CTX)[1] is None
    assert watch_tick("w1", state, DAY + 900_001, CTX)[1] is not None


def test_a_registered_watch_never_heard_is_reported_after_the_grace():
    state = WatchState(last_seen_ms=DAY, heard=False)
    assert watch_tick("w1", state, DAY + 900_000, CTX)[1] is None
    _, f = watch_tick("w1", state, DAY + 900_001, CTX)
    assert f.alert_type == "watch_silent" and "not heard" in f.detail


def test_silence_is_not_judged_while_a_restart_backlog_drains():
    state = reporting(60, 10)._replace(quiet_until_ms=DAY + 3_600_000)
    assert watch_tick("w1", state, DAY + 3_599_999, CTX)[1] is None
    assert watch_tick("w1", state, DAY + 3_600_000, CTX)[1] is not None


def test_unworn_watch_is_not_silent_but_not_worn_after_hours_in_daytime():
    state = watch_seen(WatchState(), msg("w1", "status", 1, DAY, battery=80, worn=False), DAY)
    assert watch_tick("w1", state, DAY + 4 * 3600_000 - 1, CTX)[1] is None
    _, f = watch_tick("w1", state, DAY + 4 * 3600_000, CTX)
    assert f.alert_type == "watch_not_worn" and f.severity == "yellow"


def test_watch_not_worn_waits_for_daytime():
    evening = local_ms(20)
    state = watch_seen(WatchState(), msg("w1", "status", 1, evening, battery=80, worn=False), evening)
    assert watch_tick("w1", state, evening + 5 * 3600_000, CTX)[1] is None  # 01:00
    assert watch_tick("w1", state, local_ms(7, 0, day=25), CTX)[1] is not None


def test_a_session_without_end_is_no_fault_and_silence_goes_to_maintenance():
    state, _ = detect_equipment(EquipmentState(), msg("eq-1", "session", 1, DAY, event="start", session_id="s1",
                                                       equipment_type="rower"), DAY, CTX)
    assert equipment_tick("eq-1", state, DAY + 3600_000, CTX)[1] is None
    _, f = equipment_tick("eq-1", state, DAY + 48 * 3600_000 + 1, CTX)
    assert f.alert_type == "equipment_silent"


def _power_and_count(state, counts, power=60, sid="s1"):
    found = []
    for seq, count in enumerate(counts, start=1):
        state, f = detect_equipment(state, msg("eq-1", "telemetry", seq, DAY + seq * 1000, session_id=sid, elapsed_s=seq,
                                               count=count, energy_kcal=1.0, power_w=power), DAY, CTX)
        found.append(f)
    return state, found


def test_a_count_standing_still_under_power_is_a_fault_once_per_session():
    state, found = _power_and_count(EquipmentState(), [5] * 100)
    faults = [f for f in found if f is not None]
    assert len(faults) == 1 and faults[0].alert_type == "equipment_fault" and found.index(faults[0]) == 60
    _, found = _power_and_count(state, [5] * 100, sid="s2")   # the next session may say so again
    assert sum(f is not None for f in found) == 1


def test_a_count_that_moves_or_a_machine_at_rest_is_no_fault():
    assert not any(_power_and_count(EquipmentState(), [n // 3 for n in range(200)])[1])   # slow strokes
    assert not any(_power_and_count(EquipmentState(), [5] * 200, power=0)[1])           # nobody on it


def test_a_claimed_session_is_judged_by_the_claimants_safe_maximum():
    tel = dict(session_id="s1", elapsed_s=10, count=5, energy_kcal=1.0, heart_rate=122)
    state = EquipmentState(session_id="s1")._replace(claimed_by="r-1")    # Wang Guilan, 80: limit 119
    _, f = detect_equipment(state, msg("eq-1", "telemetry", 1, DAY, **tel), DAY, CTX)
    assert f is not None and f.resident_id == "r-1" and "age 80" in f.detail
    _, f = detect_equipment(EquipmentState(session_id="s1"), msg("eq-1", "telemetry", 1, DAY, **tel), DAY, CTX)
    assert f is None                                                        # default age 70: limit 127


def test_a_doctors_exercise_maximum_wins_over_the_age_rule():
    directory = parse_community({**COMMUNITY, "residents": [{**COMMUNITY["residents"][0], "exercise_max_hr": 100}]})
    ctx = RuleContext.of(AlertSettings(), directory)
    tel = dict(session_id="s1", elapsed_s=10, count=5, energy_kcal=1.0, heart_rate=105)
    _, f = detect_equipment(EquipmentState(), msg("eq-home", "telemetry", 1, DAY, **tel), DAY, ctx)
    assert f is not None and "exercise maximum" in f.detail


def test_every_watch_stream_has_its_detectors_listed():
    from alerts.rules import WATCH_DETECTORS
    from gateway.models import STREAMS, DeviceKind

    assert set(WATCH_DETECTORS) == {cls for (kind, _), cls in STREAMS.items() if kind == DeviceKind.WATCH}


def test_readings_refused_as_out_of_range_are_a_sensor_fault_after_three_in_a_row():
    from alerts.rules import refused_reading

    state, found = EquipmentState(session_id="s1"), []
    for _ in range(2):
        state, f = refused_reading("eq-1", state, "field 'power_w': too large", DAY, CTX)
        found.append(f)
    # a good reading in between: the sensor recovered, the count starts again
    state, _ = _power_and_count(state, [1, 2])
    for _ in range(5):
        state, f = refused_reading("eq-1", state, "field 'power_w': too large", DAY, CTX)
        found.append(f)
    assert [f is not None for f in found] == [False, False, False, False, True, False, False]
    fault = next(f for f in found if f)
    assert fault.alert_type == "equipment_fault" and fault.severity == "yellow"
    assert "out of range" in fault.detail and "power_w" in fault.detail


# The silence sweep runs watch_tick / equipment_tick only on the candidates their filters pick: a state the
# filter passes over must be one the rule would find nothing about, whatever the settings and the hour.
_SWEEP_SETTINGS = [AlertSettings(), AlertSettings(watch_silent_s=120, watch_silent_min_s=300)]
_OFFSETS_S = (0, 119, 121, 299, 301, 901, 3_601, 5 * 3600, 49 * 3600)


@pytest.mark.parametrize("settings", _SWEEP_SETTINGS, ids=["defaults", "short_first_threshold"])
@pytest.mark.parametrize("now", [DAY, NIGHT], ids=["day", "night"])
def test_the_sweep_filter_keeps_every_watch_the_rule_would_find_something_about(settings, now):
    ctx = RuleContext.of(settings, DIRECTORY)
    states = {}
    for i, (silent_s, worn, heard, silent, fence, night, reported, changed_s, learned, quiet) in enumerate(
            itertools.product(_OFFSETS_S, (True, False), (True, False), (True, False), (True, False), (True, False),
                              (True, False), (None, 3600, 5 * 3600), (False, True), (False, True))):
        states[f"w{i}"] = WatchState(
            last_seen_ms=now - silent_s * 1000, worn=worn, heard=heard, silent_fired=silent, fence_fired=fence,
            fence_night_fired=night, not_worn_fired=reported,
            worn_changed_ms=0 if changed_s is None else now - changed_s * 1000,
            cadence_ms=60_000.0 if learned else 0.0, intervals=10 if learned else 0,
            quiet_until_ms=now + 1 if quiet else 0)
    found = {d for d, state in states.items() if watch_tick(d, state, now, ctx)[1] is not None}
    picked = set(watch_tick_candidates({d: tuple(s) for d, s in states.items()}, list(states), now, ctx))
    assert found and found <= picked < set(states)
    # What nearly every watch is, at every sweep: worn, heard lately, no episode going on.
    assert "w0" not in picked and states["w0"].worn and states["w0"].last_seen_ms == now


@pytest.mark.parametrize("now", [DAY, NIGHT], ids=["day", "night"])
def test_the_sweep_filter_keeps_every_machine_the_rule_would_find_silent(now):
    states = {f"e{i}": EquipmentState(last_seen_ms=now - silent_s * 1000, silent_fired=silent, heard=heard,
                                      quiet_until_ms=now + 1 if quiet else 0)
              for i, (silent_s, silent, heard, quiet) in enumerate(
                  itertools.product(_OFFSETS_S, (True, False), (True, False), (True, False)))}
    found = {d for d, state in states.items() if equipment_tick(d, state, now, CTX)[1] is not None}
    picked = set(equipment_tick_candidates({d: tuple(s) for d, s in states.items()}, list(states), now, CTX))
    assert found and found <= picked < set(states)
