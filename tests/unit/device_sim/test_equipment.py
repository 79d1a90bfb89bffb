"""Simulated fitness equipment: sessions that make physical sense for each machine type."""
from __future__ import annotations

import functools
import itertools
import json

import pytest

from device_sim.equipment import MACHINES, WEIGHT_KG
from device_sim.reading import hour_of_day
from device_sim.scenario import load_scenario, parse_scenario
from device_sim.stream import generate
from gateway.models import EquipmentType

START_MS = 1_767_225_600_000
A_DAY = parse_scenario('duration = "24h"\nstart_time = "00:00"\n[fleet]\n'
                       'equipment = ["rower", "elliptical", "walker", "ab_board", "waist_twister"]\n')


def _sessions(scenario, seed: int = 5) -> dict[str, list[list[tuple[int, dict]]]]:
    """Each machine's sessions, each one's messages in order: start, telemetry..., end."""
    sessions: dict[str, list[list[tuple[int, dict]]]] = {device: [] for device, _ in scenario.equipment}
    for e in generate(scenario, seed, START_MS):
        device, body = e.topic.split("/")[2], json.loads(e.payload)
        if body.get("event") == "start":
            sessions[device].append([])
        sessions[device][-1].append((e.t_ms, body))
    return sessions


MACHINE_OF = dict(A_DAY.equipment)


@functools.cache
def _day() -> dict[str, list[list[tuple[int, dict]]]]:
    """A day of every machine type, generated once for all the tests here."""
    return _sessions(A_DAY)


@pytest.mark.parametrize("device", sorted(MACHINE_OF))
def test_a_session_is_a_start_one_reading_a_second_and_an_end_with_the_totals(device):
    assert len(_day()[device]) >= 10
    for session in _day()[device]:
        (t0, start), *telemetry, (_, end) = session
        assert (start["event"], end["event"]) == ("start", "end")
        assert start["equipment_type"] == end["equipment_type"] == MACHINE_OF[device]
        assert [b["elapsed_s"] for _, b in telemetry] == list(range(1, len(telemetry) + 1))
        assert [t for t, _ in telemetry] == [t0 + 1000 * s for s in range(1, len(telemetry) + 1)]
        assert {b["session_id"] for _, b in session} == {start["session_id"]}
        last = telemetry[-1][1]
        assert (end["elapsed_s"], end["count"], end["energy_kcal"]) == (last["elapsed_s"], last["count"],
                                                                        last["energy_kcal"])


@pytest.mark.parametrize("device", sorted(MACHINE_OF))
def test_counts_distance_and_energy_never_go_back_within_a_session(device):
    for session in _day()[device]:
        telemetry = [b for _, b in session[1:-1]]
        for a, b in itertools.pairwise(telemetry):
            assert b["count"] >= a["count"]
            assert b["energy_kcal"] >= a["energy_kcal"]
            assert b.get("distance_m", 0) >= a.get("distance_m", 0)


@pytest.mark.parametrize("device", sorted(MACHINE_OF))
def test_rate_distance_and_energy_fit_the_machine_type(device):
    profile = MACHINES[MACHINE_OF[device]]
    for session in _day()[device]:
        end = session[-1][1]
        minutes = end["elapsed_s"] / 60
        if minutes < 2:
            continue
        low_rate, high_rate = profile.count_per_min
        assert 0.85 * low_rate <= end["count"] / minutes <= 1.15 * high_rate
        kcal_per_min = end["energy_kcal"] / minutes
        assert profile.met[0] * WEIGHT_KG[0] / 60 * 0.9 <= kcal_per_min <= profile.met[1] * WEIGHT_KG[1] / 60 * 1.1
        if profile.metres_per_count is None:
            assert "distance_m" not in end
        else:
            assert end["distance_m"] == pytest.approx(end["count"] * profile.metres_per_count)


def test_the_rower_is_harder_work_than_the_waist_twister():
    def kcal_per_min(device):
        return [s[-1][1]["energy_kcal"] / (s[-1][1]["elapsed_s"] / 60) for s in _day()[device] if len(s) > 120]
    assert sum(kcal_per_min("rower-01")) / len(kcal_per_min("rower-01")) > \
        sum(kcal_per_min("waist-twister-01")) / len(kcal_per_min("waist-twister-01"))


def test_heart_rate_stays_physiological_in_ordinary_sessions():
    rates = [b["heart_rate"] for sessions in _day().values() for s in sessions for _, b in s[1:-1]]
    assert min(rates) >= 50 and max(rates) <= 220 - 60


def test_nobody_exercises_late_at_night_and_mornings_are_busier_than_midday():
    starts = [hour_of_day(0, s[0][0]) for sessions in _day().values() for s in sessions]
    assert not [h for h in starts if h >= 21 or h < 5]
    morning = sum(1 for h in starts if 6 <= h < 9)
    midday = sum(1 for h in starts if 11 <= h < 14)
    assert morning > 2 * midday


def test_an_overexerting_rower_climbs_past_220_minus_age():
    scenario = load_scenario("overexertion")  # age 80 from 10 min, for 12 min
    (session,) = [s for s in _sessions(scenario)["rower-01"] if s[0][0] == 10 * 60_000]
    rates = [b["heart_rate"] for _, b in session[1:-1]]
    assert max(rates) > 220 - 80
    assert rates[0] < 220 - 80
    assert session[-1][1]["elapsed_s"] == 12 * 60


def test_every_machine_type_is_described():
    assert set(MACHINES) == set(EquipmentType)


# -- the faults real machines have --------------------------------------------------------

def _scripted(events: str) -> dict[str, list[list[tuple[int, dict]]]]:
    scenario = parse_scenario('duration = "3h"\nstart_time = "06:00"\n[fleet]\nequipment = ["rower"]\n' + events)
    return _sessions(scenario)


def _session_at(sessions: list[list[tuple[int, dict]]], t_ms: int) -> list[tuple[int, dict]]:
    return next(s for s in sessions if s[0][0] <= t_ms <= s[-1][0])


def test_a_reboot_mid_session_keeps_the_session_and_counts_from_zero_again():
    sessions = _scripted('[[events]]\nat = "45m"\ndevice = "rower-01"\naction = "reboot"\n')["rower-01"]
    hit = _session_at(sessions, 45 * 60_000)   # the scenario is written so that the reboot falls inside one
    telemetry = [(t, b) for t, b in hit if "event" not in b]
    before = [b for t, b in telemetry if t < 45 * 60_000]
    after = [b for t, b in telemetry if t >= 45 * 60_000]
    assert before and after and {b["session_id"] for _, b in hit} == {hit[0][1]["session_id"]}
    assert after[0]["elapsed_s"] == 1 and after[0]["count"] <= 1 and after[0]["count"] < before[-1]["count"]
    assert [b["seq"] for b in after[:2]] == [1, 2]          # its message numbers start again too
    end = hit[-1][1]
    assert end["event"] == "end" and end["count"] == after[-1]["count"]   # totals since the reboot


def test_an_abandoned_session_stops_without_an_end():
    sessions = _scripted('[[events]]\nat = "45m"\ndevice = "rower-01"\naction = "abandon"\n')["rower-01"]
    hit = next(s for s in sessions if s[-1][0] >= 45 * 60_000 - 1000)
    assert hit[-1][1].get("event") != "end" and "event" not in hit[-1][1]
    assert all(s[-1][1].get("event") == "end" for s in sessions if s is not hit)


def test_the_fitness_scenario_exercises_every_fault_of_a_machine():
    scenario = load_scenario("fitness")
    actions = {e.action for e in scenario.events}
    assert {"reboot", "abandon", "duplicate", "out_of_order", "overexert"} <= actions
    assert any(op.action == "claim" for op in scenario.operations)
    sessions = _sessions(scenario, seed=1)   # the seed `device_sim run` and the demo play
    for e in scenario.events:
        if e.action in ("reboot", "duplicate", "out_of_order"):   # each lands inside a session
            assert any(s[0][0] <= e.t_ms <= s[-1][0] for s in sessions[e.device]), e
