"""Simulated outdoor fitness equipment: sessions of 1 Hz telemetry, busier at the usual exercise hours."""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from device_sim.reading import Reading, hour_of_day
from device_sim.scenario import Event, Scenario
from gateway.models import EquipmentSession, EquipmentTelemetry, EquipmentType

HUMAN_EFFICIENCY = 0.2  # mechanical work out per metabolic energy in
KCAL_J = 4184


@dataclass(frozen=True, slots=True)
class MachineProfile:
    """How one machine type is used: counts per minute, metres per count, effort (MET), session length."""

    count_per_min: tuple[float, float]
    metres_per_count: float | None
    met: tuple[float, float]
    session_min: tuple[float, float]
    effort: float  # share of the heart-rate reserve a typical user works at


MACHINES: dict[EquipmentType, MachineProfile] = {
    EquipmentType.ROWER: MachineProfile((16, 26), 5.0, (4.0, 6.0), (4, 15), 0.55),
    EquipmentType.ELLIPTICAL: MachineProfile((40, 70), 1.2, (3.5, 5.0), (5, 20), 0.5),
    EquipmentType.WALKER: MachineProfile((40, 70), 0.6, (2.5, 3.5), (5, 20), 0.4),
    EquipmentType.AB_BOARD: MachineProfile((8, 18), None, (2.5, 3.8), (3, 10), 0.45),
    EquipmentType.WAIST_TWISTER: MachineProfile((20, 40), None, (2.0, 2.8), (3, 12), 0.3),
}
WEIGHT_KG = (45.0, 85.0)

# Mean minutes between sessions by local hour; None: nobody exercises then.
_GAP_MIN_BY_HOUR = [None] * 5 + [20, 4, 4, 4, 10, 10, 25, 25, 25, 15, 15, 5, 5, 5, 12, 12, None, None, None]


@dataclass(frozen=True, slots=True)
class Exerciser:
    age: int
    weight_kg: float
    resting_hr: int
    overexerting: bool = False

    @property
    def max_hr(self) -> int:
        """The usual safe maximum, 220 minus age."""
        return 220 - self.age


def idle_gap_ms(rng: random.Random, start_time_s: float, t_ms: int) -> int:
    """How long until the next user arrives, by the time of day; nobody comes while it is closed."""
    gap = 0
    while True:
        mean = _GAP_MIN_BY_HOUR[int(hour_of_day(start_time_s, t_ms + gap))]
        if mean is None:
            gap += 15 * 60_000  # closed: look again in a quarter of an hour
            continue
        arrival = gap + 30_000 + round(rng.expovariate(1 / mean) * 60_000)
        if _GAP_MIN_BY_HOUR[int(hour_of_day(start_time_s, t_ms + arrival))] is not None:
            return arrival
        gap = arrival


def session_readings(rng: random.Random, machine: EquipmentType, session_id: str, t0_ms: int, seconds: int,
                     who: Exerciser, reboots: Sequence[int] = (), end: bool = True) -> Iterator[Reading]:
    """Start, one telemetry reading a second, end with the totals. The machine counts from its last
    reset: a reboot (at a time in `reboots`) keeps the session id and counts from 0 again. Without
    `end` the session just stops, as when the machine loses its network as the user walks away."""
    prof = MACHINES[machine]
    rate = rng.uniform(*prof.count_per_min) / 60
    met = rng.uniform(*prof.met)
    yield Reading(t0_ms, EquipmentSession, {"event": "start", "session_id": session_id, "equipment_type": machine})
    hr, count_f, kcal = float(who.resting_hr + rng.randint(5, 15)), 0.0, 0.0
    zero_s, zero_count, zero_kcal = 0, 0, 0.0          # the counters' values at the machine's last reset
    pending = sorted(r for r in reboots if t0_ms < r <= t0_ms + seconds * 1000)
    reserve = who.max_hr - who.resting_hr
    totals: dict[str, float] = {"elapsed_s": 0, "count": 0, "energy_kcal": 0.0}
    for s in range(1, seconds + 1):
        pace = rng.uniform(0.9, 1.1)
        count_f += rate * pace
        kcal_s = met * pace * who.weight_kg / 3600
        kcal += kcal_s
        if pending and pending[0] <= t0_ms + s * 1000:
            pending.pop(0)
            zero_s, zero_count, zero_kcal = s - 1, int(count_f), kcal - kcal_s
        if who.overexerting:  # keeps pushing: the target climbs past the safe maximum
            target = who.resting_hr + reserve * (0.6 + 0.6 * s / seconds)
        else:
            target = who.resting_hr + reserve * prof.effort
        hr = target + (hr - target) * math.exp(-1 / 45)
        count = int(count_f) - zero_count
        totals = {"elapsed_s": s - zero_s, "count": count, "energy_kcal": round(kcal - zero_kcal, 2)}
        if prof.metres_per_count is not None:
            totals["distance_m"] = round(count * prof.metres_per_count, 1)
        yield Reading(t0_ms + s * 1000, EquipmentTelemetry, {
            "session_id": session_id, **totals, "heart_rate": min(250, round(hr + rng.gauss(0, 1.5))),
            "power_w": round(kcal_s * KCAL_J * HUMAN_EFFICIENCY)})
    if end:
        yield Reading(t0_ms + seconds * 1000, EquipmentSession,
                      {"event": "end", "session_id": session_id, "equipment_type": machine, **totals})


def _exerciser(rng: random.Random, overexerting: bool = False, age: int | None = None) -> Exerciser:
    return Exerciser(age or rng.randint(60, 85), round(rng.uniform(*WEIGHT_KG), 1), rng.randint(60, 78), overexerting)


def machine_readings(device_id: str, machine: EquipmentType, scenario: Scenario, seed: int) -> Iterator[Reading]:
    """One machine's sessions over the scenario. An `overexert` event makes the session at its time; a
    `reboot` during a session restarts the machine's counters; an `abandon` stops the session running
    at its time (or the next one) without `end`."""
    rng = random.Random(f"{seed}:{device_id}")
    duration_ms = round(scenario.duration_s * 1000)
    events = scenario.events_for(device_id)
    scripted: list[Event] = [e for e in events if e.action == "overexert"]
    abandons = [e.t_ms for e in events if e.action == "abandon"]
    reboots = [e.t_ms for e in events if e.action == "reboot"]
    prof, t, n = MACHINES[machine], idle_gap_ms(rng, scenario.start_time_s, 0), 0
    while True:
        seconds = round(rng.uniform(*prof.session_min) * 60)
        who = _exerciser(rng)
        # A scripted session takes over if a natural one would still be running when it is due.
        if scripted and scripted[0].t_ms <= t + seconds * 1000 + 1000:
            e = scripted.pop(0)
            t = e.t_ms  # never inside the previous session: that one would have been replaced
            seconds = round(e.duration_s or 600)
            who = _exerciser(rng, True, e.age)
        seconds = min(seconds, (duration_ms - t) // 1000 - 1)  # the scenario's end cuts a session short
        if seconds < 1:
            return
        ends = True
        if abandons and abandons[0] <= t + seconds * 1000:
            cut = abandons.pop(0)   # between sessions: the next one is left half-way
            seconds, ends = max(1, (cut - t) // 1000 if cut > t else seconds // 2), False
        n += 1
        yield from session_readings(rng, machine, f"{device_id}-s{n:04d}", t, seconds, who, reboots, ends)
        t += seconds * 1000 + idle_gap_ms(rng, scenario.start_time_s, t + seconds * 1000)
