"""A wearer's day as a timeline of segments: asleep, at home, walking, out at the park or market."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

from device_sim.geo import Community, GeoPoint, Leg, away_from, street_legs
from device_sim.reading import DAY_MS

HOUR_MS = 3_600_000
MIN_MS = 60_000


class Activity(StrEnum):
    SLEEP = "sleep"
    HOME = "home"
    WALK = "walk"
    OUT = "out"  # standing about at the park or market


@dataclass(frozen=True, slots=True)
class Segment:
    t0_ms: int
    t1_ms: int
    activity: Activity
    legs: tuple[Leg, ...]
    on_charger: bool = False  # the watch is off the wrist, on its charger

    def at(self, t_ms: int) -> GeoPoint:
        for leg in self.legs:
            if t_ms < leg.t1_ms:
                return leg.at(t_ms)
        return self.legs[-1].end

    @property
    def start(self) -> GeoPoint:
        return self.legs[0].start

    @property
    def end(self) -> GeoPoint:
        return self.legs[-1].end


@dataclass(frozen=True, slots=True)
class Places:
    """Where the community goes: the park (with the fitness corner) and the market."""

    park: GeoPoint
    market: GeoPoint


def community_places(community: Community, seed: int) -> Places:
    rng = random.Random(f"{seed}:community")
    return Places(community.random_spot(rng, 0.6), community.random_spot(rng, 0.8))


@dataclass(frozen=True, slots=True)
class WearerProfile:
    home: GeoPoint
    age: int
    speed_mps: float  # an elderly walking pace
    resting_hr: int
    steps_per_s: float
    battery: float  # at the start


def wearer_profile(rng: random.Random, community: Community) -> WearerProfile:
    return WearerProfile(community.random_spot(rng, 0.9), rng.randint(65, 90), round(rng.uniform(0.6, 1.2), 2),
                         rng.randint(60, 78), rng.uniform(1.4, 1.8), rng.uniform(45, 100))


class _Planner:
    """Appends segments one after another from a time and a place."""

    def __init__(self, t_ms: int, pos: GeoPoint) -> None:
        self.t, self.pos = t_ms, pos
        self.segments: list[Segment] = []

    def stay(self, until_ms: float, activity: Activity, on_charger: bool = False) -> None:
        until_ms = round(until_ms)   # routines are drawn in float minutes; segments are whole ms
        if until_ms > self.t:
            self.segments.append(Segment(self.t, until_ms, activity, (Leg(self.pos, self.pos, self.t, until_ms),),
                                         on_charger))
            self.t = until_ms

    def walk(self, to: GeoPoint, speed_mps: float, legs: list[Leg] | None = None) -> None:
        legs = legs or street_legs(self.pos, to, self.t, speed_mps)
        self.segments.append(Segment(self.t, legs[-1].t1_ms, Activity.WALK, tuple(legs)))
        self.t, self.pos = legs[-1].t1_ms, to


def day_plan(rng: random.Random, who: WearerProfile, places: Places, midnight_ms: int,
             charged_last_night: bool, charges_tonight: bool) -> list[Segment]:
    """Sleep, maybe a morning walk to the park, maybe an afternoon trip to the market, sleep."""
    def at(hours: float) -> int:
        return midnight_ms + round(hours * HOUR_MS)

    p = _Planner(midnight_ms, who.home)
    wake, bed = at(rng.uniform(6.0, 7.0)), at(rng.uniform(21.0, 22.0))
    p.stay(wake, Activity.SLEEP, charged_last_night)
    for chance, start, place, stay_min in ((0.8, (7.25, 9.5), places.park, (30, 90)),
                                           (0.6, (15.0, 16.5), places.market, (15, 40))):
        if rng.random() < chance:
            p.stay(at(rng.uniform(*start)), Activity.HOME)
            p.walk(place, who.speed_mps)
            p.stay(p.t + rng.uniform(*stay_min) * MIN_MS, Activity.OUT)
            p.walk(who.home, who.speed_mps)
    p.stay(bed, Activity.HOME)
    p.stay(midnight_ms + DAY_MS, Activity.SLEEP, charges_tonight)
    return p.segments


def timeline(rng: random.Random, who: WearerProfile, places: Places, start_time_s: float,
             duration_ms: int) -> list[Segment]:
    """Day plans covering offsets 0 .. duration_ms; offset 0 is `start_time_s` past local midnight."""
    first_midnight = -round(start_time_s * 1000)
    days = math.ceil((duration_ms - first_midnight) / DAY_MS)
    # Most people put the watch on its charger most nights.
    charges = [rng.random() < 0.8 for _ in range(days + 1)]
    segments: list[Segment] = []
    for d in range(days):
        segments += day_plan(rng, who, places, first_midnight + d * DAY_MS, charges[d], charges[d + 1])
    return segments


def position_at(segments: list[Segment], t_ms: int) -> GeoPoint:
    for s in segments:
        if s.t0_ms <= t_ms < s.t1_ms:
            return s.at(t_ms)
    return segments[-1].end


def with_wandering(segments: list[Segment], t_ms: int, duration_ms: int, who: WearerProfile,
                   community: Community) -> list[Segment]:
    """The wearer walks away from the community centre for `duration_ms`, is found, and walks home."""
    pos = position_at(segments, t_ms)
    east, north = away_from(community.centre, pos)
    speed = max(0.6, who.speed_mps * 0.8)  # aimless, a little slower than usual
    dist = speed * duration_ms / 1000
    lost = pos.moved(east * dist, north * dist)
    p = _Planner(t_ms, pos)
    p.walk(lost, speed, [Leg(pos, lost, t_ms, t_ms + duration_ms)])
    p.stay(p.t + 20 * MIN_MS, Activity.OUT)
    p.walk(who.home, who.speed_mps)
    before = [s for s in segments if s.t0_ms < t_ms]
    if before and before[-1].t1_ms > t_ms:
        last = before[-1]
        before[-1] = Segment(last.t0_ms, t_ms, last.activity, last.legs, last.on_charger)
    # Resume the routine at the first segment that starts at home once they are back.
    after = [s for s in segments if s.t0_ms >= p.t]
    while after and after[0].start != who.home:
        after.pop(0)
    p.stay(after[0].t0_ms if after else segments[-1].t1_ms, Activity.HOME)
    return before + p.segments + after
