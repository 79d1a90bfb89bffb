"""Exercise sessions assembled from fitness equipment's `session` and `telemetry` streams (pure).

A machine counts from its own last reset: every telemetry reading and the
`end` message carry the session's running totals (elapsed time, count,
distance, energy) since the machine last started counting. Folding readings
into a `Tally` copes with what real machines and networks do:

- readings out of order: a reading older than the newest one adds nothing to
  the totals (its running totals are already inside the newer ones) but its
  heart rate and power still count toward the averages;
- a reading twice: the ingest's dedup drops an exact redelivery before it
  gets here; a reading at the same device time as the newest is ignored;
- a reboot mid-session: the machine keeps its session id but counts from 0
  again (and `seq` from 1). A newer reading with a smaller count or elapsed
  time starts a new segment; the finished segment's totals are kept, so the
  session's totals never go backwards and never double. A late reading of the
  segment before still adds what it shows beyond that segment's last totals.
- no `end`: the store closes the session after an idle timeout (`closed_by`
  "idle"), or when the machine starts another one. That is a session like any
  other, not a fault.

The machine's clock is assumed to survive its reboot (device time keeps
going forward); ingest refuses timestamps from before 2015 or far ahead.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from gateway.models import DeviceMessage, EquipmentSession, EquipmentTelemetry

ClosedBy = Literal["end", "idle"]


@dataclass(frozen=True, slots=True)
class Counters:
    """A machine's running totals: seconds of exercise, strokes/steps/reps/turns, metres, kcal."""

    elapsed_s: int = 0
    count: int = 0
    distance_m: float = 0.0
    energy_kcal: float = 0.0

    def plus(self, other: Counters) -> Counters:
        return Counters(self.elapsed_s + other.elapsed_s, self.count + other.count,
                        round(self.distance_m + other.distance_m, 1), round(self.energy_kcal + other.energy_kcal, 2))

    def minus(self, other: Counters) -> Counters:
        return Counters(self.elapsed_s - other.elapsed_s, self.count - other.count,
                        round(self.distance_m - other.distance_m, 1), round(self.energy_kcal - other.energy_kcal, 2))

    def most(self, other: Counters) -> Counters:
        """Each counter's larger value."""
        return Counters(max(self.elapsed_s, other.elapsed_s), max(self.count, other.count),
                        max(self.distance_m, other.distance_m), max(self.energy_kcal, other.energy_kcal))

    def restarted_from(self, earlier: Counters) -> bool:
        """Whether these totals, read later, can only mean the machine started counting again."""
        return self.count < earlier.count or self.elapsed_s < earlier.elapsed_s


@dataclass(frozen=True, slots=True)
class Tally:
    """One session as folded so far. Device times (`*_ts`) are the machine's epoch ms."""

    device_id: str
    session_id: str
    start_ts: int
    last_received_ms: int
    equipment_type: str | None = None
    end_ts: int | None = None
    closed_by: ClosedBy | None = None
    done: Counters = field(default_factory=Counters)     # finished segments (before reboots), summed
    prev: Counters = field(default_factory=Counters)     # the last finished segment alone (inside `done`)
    seg: Counters = field(default_factory=Counters)      # the current segment's newest totals
    seg_start_ts: int = 0   # device time of the current segment's first reading; 0 for the first segment
    seg_ts: int = 0         # device time of the current segment's newest reading; 0 before any
    hr_sum: int = 0
    hr_n: int = 0
    hr_max: int | None = None
    power_sum: int = 0
    power_n: int = 0
    readings: int = 0

    @property
    def totals(self) -> Counters:
        return self.done.plus(self.seg)

    @property
    def last_ts(self) -> int:
        return max(self.seg_ts, self.end_ts or 0, self.start_ts)

    @property
    def hr_avg(self) -> float | None:
        return round(self.hr_sum / self.hr_n, 1) if self.hr_n else None

    @property
    def power_avg(self) -> float | None:
        return round(self.power_sum / self.power_n, 1) if self.power_n else None

    @property
    def duration_s(self) -> int:
        """The machine's own count of exercise time; the wall-clock span if it counted none."""
        return self.totals.elapsed_s or max(0, (self.end_ts or self.last_ts) - self.start_ts) // 1000

    # -- stored form -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the store keeps to fold later readings (JSON-able)."""
        return {"done": asdict(self.done), "prev": asdict(self.prev), "seg": asdict(self.seg),
                "seg_start_ts": self.seg_start_ts, "seg_ts": self.seg_ts, "hr_sum": self.hr_sum, "hr_n": self.hr_n,
                "power_sum": self.power_sum, "power_n": self.power_n, "readings": self.readings}

    @classmethod
    def restore(cls, device_id: str, session_id: str, start_ts: int, last_received_ms: int, equipment_type: str | None,
                end_ts: int | None, closed_by: ClosedBy | None, hr_max: int | None, state: dict[str, Any]) -> Tally:
        return cls(device_id, session_id, start_ts, last_received_ms, equipment_type, end_ts, closed_by,
                   Counters(**state["done"]), Counters(**state["prev"]), Counters(**state["seg"]),
                   state["seg_start_ts"], state["seg_ts"], state["hr_sum"], state["hr_n"], hr_max,
                   state["power_sum"], state["power_n"], state["readings"])


def _fold_counters(t: Tally, ts: int, reading: Counters) -> Tally:
    if ts > t.seg_ts:
        if t.seg_ts and reading.restarted_from(t.seg):      # the machine rebooted: a new segment
            return replace(t, done=t.done.plus(t.seg), prev=t.seg, seg=reading, seg_start_ts=ts, seg_ts=ts)
        return replace(t, seg=t.seg.most(reading), seg_ts=ts)
    if ts >= t.seg_start_ts:                                 # late, within the current segment
        return replace(t, seg=t.seg.most(reading))
    grown = t.prev.most(reading)                              # late, from the segment before the reboot
    return replace(t, done=t.done.plus(grown.minus(t.prev)), prev=grown)


def fold(t: Tally, message: DeviceMessage, received_ms: int) -> Tally:
    """One more message of this session (already deduplicated by the ingest)."""
    p = message.payload
    t = replace(t, last_received_ms=max(t.last_received_ms, received_ms), start_ts=min(t.start_ts, p.ts))
    if isinstance(p, EquipmentTelemetry):
        if p.ts == t.seg_ts:
            return t                                          # the same reading again, under another seq
        if p.heart_rate is not None:
            t = replace(t, hr_sum=t.hr_sum + p.heart_rate, hr_n=t.hr_n + 1, hr_max=max(t.hr_max or 0, p.heart_rate))
        if p.power_w is not None:
            t = replace(t, power_sum=t.power_sum + p.power_w, power_n=t.power_n + 1)
        reading = Counters(p.elapsed_s, p.count, p.distance_m or 0.0, p.energy_kcal)
        return replace(_fold_counters(t, p.ts, reading), readings=t.readings + 1)
    if isinstance(p, EquipmentSession):
        t = replace(t, equipment_type=p.equipment_type.value)
        if p.event == "end":
            if any(v is not None for v in (p.elapsed_s, p.count, p.distance_m, p.energy_kcal)):
                s = t.seg   # a total the end leaves out stays what the last reading said
                reading = Counters(s.elapsed_s if p.elapsed_s is None else p.elapsed_s,
                                   s.count if p.count is None else p.count,
                                   s.distance_m if p.distance_m is None else p.distance_m,
                                   s.energy_kcal if p.energy_kcal is None else p.energy_kcal)
                t = _fold_counters(t, p.ts, reading)
            t = replace(t, end_ts=p.ts, closed_by="end")
    return t


def session_of(message: DeviceMessage) -> str | None:
    """The session a message belongs to, for equipment session and telemetry messages."""
    p = message.payload
    return p.session_id if isinstance(p, (EquipmentSession, EquipmentTelemetry)) else None


def by_session(messages: Iterable[DeviceMessage]) -> dict[tuple[str, str], list[DeviceMessage]]:
    """A batch's exercise messages per (device, session), each list in device-time order."""
    out: dict[tuple[str, str], list[DeviceMessage]] = {}
    for m in messages:
        sid = session_of(m)
        if sid is not None:
            out.setdefault((m.device_id, sid), []).append(m)
    for ms in out.values():
        ms.sort(key=lambda m: (m.payload.ts, m.payload.seq))
    return out


def fold_all(t: Tally | None, device_id: str, session_id: str, messages: Sequence[DeviceMessage],
             received_ms: int) -> Tally:
    """A session's tally after a batch's messages of it (`t` None: the session is new)."""
    if t is None:
        t = Tally(device_id, session_id, messages[0].payload.ts, received_ms)
    for m in messages:
        t = fold(t, m, received_ms)
    return t
