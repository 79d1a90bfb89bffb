"""Simulated wearers obey physics and physiology, and scripted events change what their watch says."""
from __future__ import annotations

import itertools
import json

from device_sim.geo import GeoPoint, distance_m
from device_sim.routine import Activity, community_places, position_at
from device_sim.scenario import load_scenario, parse_scenario
from device_sim.stream import generate
from device_sim.wearer import WearerSim
from gateway.models import Health

START_MS = 1_767_225_600_000
TWO_DAYS = parse_scenario('duration = "48h"\nstart_time = "00:00"\n[fleet]\nwatches = 4\n')


def _by_stream(scenario, device: str, stream: str, seed: int = 3) -> list[tuple[int, dict]]:
    topic = f"eldercare/watch/{device}/{stream}"
    return [(e.t_ms, json.loads(e.payload)) for e in generate(scenario, seed, START_MS) if e.topic == topic]


def test_true_walking_pace_is_that_of_an_elderly_person():
    for device in TWO_DAYS.watches:
        sim = WearerSim(device, TWO_DAYS, 3, community_places(TWO_DAYS.community, 3))
        walks = [leg for s in sim.segments if s.activity == Activity.WALK for leg in s.legs if leg.t1_ms > leg.t0_ms]
        assert walks
        for leg in walks:
            pace = distance_m(leg.start, leg.end) / ((leg.t1_ms - leg.t0_ms) / 1000)
            assert 0.59 <= pace <= 1.21


def test_reported_positions_move_no_faster_than_walking_pace_plus_the_stated_accuracy():
    moving_pairs = 0
    for device in TWO_DAYS.watches:
        fixes = _by_stream(TWO_DAYS, device, "location")
        for (t1, a), (t2, b) in itertools.pairwise(fixes):
            apart = distance_m(GeoPoint(a["lat"], a["lon"]), GeoPoint(b["lat"], b["lon"]))
            # 0.3 m: the 6-decimal rounding of both fixes.
            assert apart <= 1.2 * (t2 - t1) / 1000 + a["accuracy_m"] + b["accuracy_m"] + 0.3
            moving_pairs += t2 - t1 == 60_000 and a["source"] == b["source"] == "gps"
    assert moving_pairs > 50  # the bound was tested on wearers who were walking


def test_battery_only_rises_on_the_charger_and_drains_over_about_two_days():
    charged = False
    for device in TWO_DAYS.watches:
        statuses = [s for _, s in _by_stream(TWO_DAYS, device, "status")]
        for a, b in itertools.pairwise(statuses):
            if b["battery"] > a["battery"]:
                assert a["charging"] or b["charging"] or not b["worn"]
            charged |= b["charging"]
            assert not (b["charging"] and b["worn"])  # charging means off the wrist
        worn_run = list(itertools.takewhile(lambda s: s["worn"], itertools.dropwhile(lambda s: not s["worn"], statuses)))
        hours = (worn_run[-1]["ts"] - worn_run[0]["ts"]) / 3_600_000
        assert hours > 6
        assert 1.5 <= (worn_run[0]["battery"] - worn_run[-1]["battery"]) / hours <= 3.0
    assert charged


def test_heart_rate_is_physiological_and_higher_walking_than_asleep():
    by_activity: dict[Activity, list[int]] = {a: [] for a in Activity}
    for device in TWO_DAYS.watches:
        sim = WearerSim(device, TWO_DAYS, 3, community_places(TWO_DAYS.community, 3))
        readings = [r for r in sim.readings() if r.model is Health]
        for r in readings:
            assert 40 <= r.fields["heart_rate"] <= 220 - sim.who.age
            seg = next(s for s in sim.segments if s.t0_ms <= r.t_ms < s.t1_ms)
            by_activity[seg.activity].append(r.fields["heart_rate"])
    mean = {a: sum(v) / len(v) for a, v in by_activity.items() if v}
    assert mean[Activity.WALK] > mean[Activity.HOME] > mean[Activity.SLEEP]


def test_steps_count_up_while_walking_and_start_again_at_midnight():
    statuses = _by_stream(TWO_DAYS, "watch-0001", "status")
    steps = [(t, s["steps"]) for t, s in statuses]
    for (t1, a), (t2, b) in itertools.pairwise(steps):
        if t1 // 86_400_000 == t2 // 86_400_000:
            assert b >= a
    assert max(s for _, s in steps) > 500
    assert [s for t, s in steps if 86_400_000 <= t < 86_400_000 + 3_600_000] == [0] * 12


def test_a_night_wanderer_leaves_the_community_and_is_brought_home():
    scenario = load_scenario("night_wander")  # wanders from 40 min to 80 min
    radius = scenario.community.radius_m
    gps = [(t, GeoPoint(f["lat"], f["lon"]), f["accuracy_m"])
           for t, f in _by_stream(scenario, "watch-0001", "location") if f["source"] == "gps"]
    far = [distance_m(scenario.community.centre, p) - acc for t, p, acc in gps if 40 * 60_000 <= t <= 80 * 60_000]
    assert max(far) > radius + 200
    home = [distance_m(scenario.community.centre, p) + acc for t, p, acc in gps if t >= 170 * 60_000]
    assert home and max(home) < radius + 100
    worn = [s["worn"] for t, s in _by_stream(scenario, "watch-0001", "status") if 40 * 60_000 <= t < 80 * 60_000]
    assert worn and all(worn)


def test_a_watch_taken_off_reports_not_worn_sends_no_health_and_counts_no_steps():
    scenario = load_scenario("device_trouble")  # watch-0002 off from 30 min for 3 h
    off = range(30 * 60_000, 210 * 60_000)
    statuses = [s for t, s in _by_stream(scenario, "watch-0002", "status") if t in off]
    assert statuses and not any(s["worn"] for s in statuses)
    assert len({s["steps"] for s in statuses}) == 1
    assert not [t for t, _ in _by_stream(scenario, "watch-0002", "health") if t in off]
    assert [t for t, _ in _by_stream(scenario, "watch-0002", "health") if t >= 210 * 60_000]


def test_a_low_battery_is_reported_and_an_empty_watch_goes_quiet():
    scenario = load_scenario("device_trouble")  # watch-0001 at 6 % after 10 min, no charger in sight
    statuses = _by_stream(scenario, "watch-0001", "status")
    low = [s["battery"] for t, s in statuses if t == 10 * 60_000]
    assert low == [6]
    last = max(e.t_ms for e in generate(scenario, 3, START_MS) if "/watch-0001/" in e.topic)
    assert last < 10 * 60_000 + 6 / 2.1 * 3_600_000 + 1000
    assert scenario.duration_s * 1000 - last > 3_600_000


def test_sos_and_fall_carry_a_position_near_the_wearer():
    scenario = load_scenario("sos_and_fall")
    fall = _by_stream(scenario, "watch-0002", "fall")
    assert [t for t, _ in fall] == [180_000]
    assert fall[0][1]["confidence"] == 0.9
    where = GeoPoint(fall[0][1]["lat"], fall[0][1]["lon"])
    assert distance_m(scenario.community.centre, where) <= scenario.community.radius_m + fall[0][1]["accuracy_m"]


def test_lbs_drift_gives_cell_fixes_a_kilometre_out_whose_accuracy_still_holds_the_wearer():
    drifting = parse_scenario('duration = "2h"\nstart_time = "10:00"\n[fleet]\nwatches = 1\n'
                              '[[events]]\nat = "30m"\ndevice = "watch-0001"\naction = "lbs_drift"\nduration = "1h"\n')
    sim = WearerSim("watch-0001", drifting, 3, community_places(drifting.community, 3))
    centre = drifting.community.centre
    fixes = _by_stream(drifting, "watch-0001", "location")
    drifted = [(t, f) for t, f in fixes if 30 * 60_000 <= t < 90 * 60_000]
    assert len(drifted) >= 5
    for t, f in drifted:
        truth, reported = position_at(sim.segments, t), GeoPoint(f["lat"], f["lon"])
        assert f["source"] == "lbs" and 1400 <= f["accuracy_m"] <= 1600
        assert 899 <= distance_m(truth, reported) <= 1101 < f["accuracy_m"]
        assert distance_m(centre, reported) > distance_m(centre, truth) + 800  # away from the community, not into it
    steady = parse_scenario('duration = "2h"\nstart_time = "10:00"\n[fleet]\nwatches = 1\n')
    assert [f for t, f in fixes if t < 30 * 60_000] == [f for t, f in _by_stream(steady, "watch-0001", "location")
                                                        if t < 30 * 60_000]
