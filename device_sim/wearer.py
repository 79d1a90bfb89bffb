"""A simulated smartwatch wearer: where they are, their battery, heart rate and steps, as readings."""
from __future__ import annotations

import math
import random
from collections.abc import Iterator

from device_sim.geo import GeoPoint, away_from, noisy_fix
from device_sim.reading import DAY_MS, Reading
from device_sim.routine import Activity, Places, Segment, position_at, timeline, wearer_profile, with_wandering
from device_sim.scenario import Event, Scenario
from gateway.models import DevicePayload, FallDetected, Health, Location, ServiceCall, SosPressed, WatchStatus

DRAIN_PER_H = 2.1  # about two days from full
CHARGE_PER_H = 35.0
_OUTDOORS = (Activity.WALK, Activity.OUT)
# (source, share, accuracy range in m): a clear sky gives GPS; indoors the watch falls back.
_FIXES = {
    True: (("gps", 0.90, (4, 15)), ("wifi", 0.06, (25, 60)), ("lbs", 0.04, (200, 1200))),
    False: (("gps", 0.30, (15, 40)), ("wifi", 0.60, (20, 60)), ("lbs", 0.10, (300, 1500))),
}
_PRESSES: dict[str, type[DevicePayload]] = {"sos": SosPressed, "fall": FallDetected, "service_call": ServiceCall}
# With neither GPS nor wifi (a lift, a basement, a flat deep in a block) the watch reports the cell
# tower's guess: about a kilometre off, and honest about it in its stated accuracy.
LBS_DRIFT_M = (900.0, 1100.0)
LBS_DRIFT_ACCURACY_M = (1400.0, 1600.0)


class WearerSim:
    """One wearer's day, stepped from one report to the next; `readings()` yields what the watch sends."""

    def __init__(self, device_id: str, scenario: Scenario, seed: int, places: Places) -> None:
        self.rng = random.Random(f"{seed}:{device_id}")
        self.scenario, self.cadence = scenario, scenario.cadence
        self.duration_ms = round(scenario.duration_s * 1000)
        self.who = wearer_profile(self.rng, scenario.community)
        self.events = [e for e in scenario.events_for(device_id) if e.action in _PRESSES
                       or e.action in ("battery_low", "remove_watch")]
        self.segments = timeline(self.rng, self.who, places, scenario.start_time_s, self.duration_ms)
        for e in scenario.events_for(device_id):
            if e.action == "wander":
                self.segments = with_wandering(self.segments, e.t_ms, e.end_ms - e.t_ms, self.who, scenario.community)
        # While the watch is off the wrist it stays where it was taken off.
        self.removed = [(e.t_ms, e.end_ms, position_at(self.segments, e.t_ms))
                        for e in self.events if e.action == "remove_watch"]
        self.cell_only = [(e.t_ms, e.end_ms) for e in scenario.events_for(device_id) if e.action == "lbs_drift"]
        self.no_charge: list[tuple[int, float]] = []
        self.battery, self.steps = self.who.battery, 0.0
        self.hr = float(self.who.resting_hr)

    def _taken_off_at(self, t_ms: int) -> GeoPoint | None:
        return next((where for t0, t1, where in self.removed if t0 <= t_ms < t1), None)

    def _worn(self, seg: Segment, t_ms: int) -> bool:
        return not seg.on_charger and self._taken_off_at(t_ms) is None

    def _charging(self, seg: Segment, t_ms: int) -> bool:
        blocked = any(t0 <= t_ms < t1 for t0, t1 in self.no_charge)
        return seg.on_charger and not blocked and self.battery < 100

    def _target_hr(self, activity: Activity) -> float:
        rest, reserve = self.who.resting_hr, 220 - self.who.age - self.who.resting_hr
        return {Activity.SLEEP: rest - 6, Activity.HOME: rest, Activity.OUT: rest + 12,
                Activity.WALK: rest + 0.35 * reserve}[activity]

    def _advance(self, seg: Segment, t0: int, t1: int) -> None:
        """Battery, steps and heart rate from t0 to t1, during which `seg` holds."""
        hours = (t1 - t0) / 3_600_000
        if self._charging(seg, t0):
            self.battery = min(100.0, self.battery + CHARGE_PER_H * hours)
        else:
            self.battery = max(0.0, self.battery - DRAIN_PER_H * hours)
        if seg.activity == Activity.WALK and self._worn(seg, t0):
            self.steps += self.who.steps_per_s * (t1 - t0) / 1000
        target = self._target_hr(seg.activity)
        self.hr = target + (self.hr - target) * math.exp(-(t1 - t0) / 90_000)
        start_ms = round(self.scenario.start_time_s * 1000)
        if (start_ms + t1) // DAY_MS != (start_ms + t0) // DAY_MS:
            self.steps = 0.0  # the pedometer counts per day

    def _fix(self, seg: Segment, t_ms: int) -> dict[str, float | str]:
        taken_off = self._taken_off_at(t_ms)
        if any(t0 <= t_ms < t1 for t0, t1 in self.cell_only):
            return self._cell_fix(taken_off or seg.at(t_ms))
        outdoors = seg.activity in _OUTDOORS and taken_off is None and not seg.on_charger
        source, acc_range = self._fix_source(self.rng.random(), outdoors)
        accuracy = round(self.rng.uniform(*acc_range), 1)
        where = noisy_fix(self.rng, taken_off or seg.at(t_ms), accuracy)
        return {"lat": round(where.lat, 6), "lon": round(where.lon, 6), "accuracy_m": accuracy, "source": source}

    @staticmethod
    def _fix_source(roll: float, outdoors: bool) -> tuple[str, tuple[float, float]]:
        """Which positioning a fix came from, and its accuracy range, for a roll in [0, 1)."""
        fixes = _FIXES[outdoors]
        for source, share, acc_range in fixes:
            if roll < share:
                return source, acc_range
            roll -= share
        return fixes[-1][0], fixes[-1][2]   # shares that sum to a hair under 1: the last kind

    def _cell_fix(self, true: GeoPoint) -> dict[str, float | str]:
        """An LBS fix drifted away from the community centre (the worst case for a geofence), its
        accuracy circle still holding the true position."""
        east, north = away_from(self.scenario.community.centre, true)
        off = self.rng.uniform(*LBS_DRIFT_M)
        where = true.moved(east * off, north * off)
        accuracy = round(self.rng.uniform(*LBS_DRIFT_ACCURACY_M), 1)
        return {"lat": round(where.lat, 6), "lon": round(where.lon, 6), "accuracy_m": accuracy, "source": "lbs"}

    def _status(self, seg: Segment, t_ms: int) -> Reading:
        return Reading(t_ms, WatchStatus, {
            "battery": math.floor(self.battery), "worn": self._worn(seg, t_ms), "charging": self._charging(seg, t_ms),
            "steps": int(self.steps), "signal_dbm": self.rng.randint(-100, -60)})

    def _scripted(self, e: Event, seg: Segment) -> Iterator[Reading]:
        t = e.t_ms
        if e.action in _PRESSES:
            fix = self._fix(seg, t)
            fix.pop("source")
            if e.action == "fall":
                fix["confidence"] = e.confidence if e.confidence is not None else round(self.rng.uniform(0.8, 0.98), 2)
                self.hr += 25  # the fright
            yield Reading(t, _PRESSES[e.action], fix)
        elif e.action == "battery_low":
            self.battery = min(self.battery, float(e.level if e.level is not None else 15))
            self.no_charge.append((t, math.inf))
            yield self._status(seg, t)
        elif e.action == "remove_watch":
            yield self._status(seg, t)  # the watch reports that it left the wrist

    def readings(self) -> Iterator[Reading]:
        c, rng = self.cadence, self.rng
        next_loc = rng.randrange(0, round(c.location_moving * 1000))
        next_status = rng.randrange(0, round(c.status * 1000))
        next_health = rng.randrange(0, round(c.health * 1000))
        pending = list(self.events)
        t, i = 0, 0
        while True:
            while self.segments[i].t1_ms <= t:
                i += 1
                if self.segments[i].activity == Activity.WALK:
                    next_loc = min(next_loc, t + round(c.location_moving * 1000))  # motion wakes the GPS
            seg = self.segments[i]
            t_next = min(next_loc, next_status, next_health, seg.t1_ms, pending[0].t_ms if pending else self.duration_ms)
            if t_next >= self.duration_ms:
                return
            self._advance(seg, t, t_next)
            t = t_next
            if seg.t1_ms <= t:
                continue
            alive = self.battery > 0
            while pending and pending[0].t_ms == t:
                out = list(self._scripted(pending.pop(0), seg))
                yield from out if alive else ()
            if next_loc == t:
                moving = seg.activity == Activity.WALK and self._worn(seg, t)
                next_loc = t + round((c.location_moving if moving else c.location_rest) * 1000)
                if alive:
                    yield Reading(t, Location, self._fix(seg, t))
            if next_status == t:
                next_status = t + round(c.status * 1000)
                if alive:
                    yield self._status(seg, t)
            if next_health == t:
                next_health = t + round(c.health * 1000)
                if alive and self._worn(seg, t):
                    yield Reading(t, Health, {"heart_rate": max(40, min(200, round(self.hr + rng.gauss(0, 2)))),
                                              "spo2": rng.randint(94, 99)})
