"""Alert rules: one detector per alert type, pure functions of device state, message and time.

Each detector takes the device's frozen state and returns the new state and at
most one `Finding`. Message-driven detectors time their windows by the device's
own `ts`; tick-driven ones (silence, not worn, equipment silence) by the
gateway clock passed in. A detector that fired remembers it in the state so a
lasting condition raises one finding per episode, not one per message.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias, TypeVar
from zoneinfo import ZoneInfo

from alerts.config import AlertSettings
from alerts.directory import Directory, Resident
from alerts.fences import distance_outside_m, is_night
from alerts.vocabulary import AlertType, Severity
from gateway.models import (
    DeviceMessage,
    DevicePayload,
    EquipmentSession,
    EquipmentTelemetry,
    FallDetected,
    Health,
    Location,
    ServiceCall,
    SosPressed,
    WatchStatus,
)

# Gaps longer than this are an outage (watch off, out of reach), not the device's reporting cadence.
_CADENCE_GAP_MAX_MS = 6 * 3_600_000
_CADENCE_MIN_GAP_MS = 1_000     # messages sent together (a status and a fix in the same second) are one report
_CADENCE_WEIGHT = 0.2           # of the newest gap in the moving average


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition worth an alert, before the engine turns it into one."""

    alert_type: AlertType
    severity: Severity
    device_id: str
    at_ms: int
    lat: float | None = None
    lon: float | None = None
    detail: str = ""
    resident_id: str | None = None   # who it is about, when the rule knows better than the directory (a claim)


def with_changes(state: _State, **changes: Any) -> _State:
    """The state with some fields changed: a new tuple, as rule states are values that no rule changes.

    Faster than NamedTuple._replace (it runs several times for every message): one list of the
    fields, the changes by position, and the tuple made from it in C."""
    values = list(state)
    position = _POSITIONS[type(state)]
    for name, value in changes.items():
        values[position[name]] = value
    return type(state)._make(values)


class WatchState(NamedTuple):
    """A watch's rule state. A tuple of plain values: the garbage collector stops tracking such a
    tuple the first time it meets it, so a million of them never lengthen its full collections
    (as slots objects they did: a pause of a tenth of a second or more, the whole process stopped)."""

    last_seen_ms: int = 0
    worn: bool = False
    worn_changed_ms: int = 0
    lat: float | None = None
    lon: float | None = None
    outside_since_ms: int | None = None
    hr_out_run: int = 0
    # Per-episode latches: set when the detector fires, cleared when the condition ends.
    fence_fired: bool = False
    battery_fired: bool = False
    silent_fired: bool = False
    not_worn_fired: bool = False
    # Reporting cadence: a moving average of the gaps between reports (device time) and how many it has seen.
    last_ts: int = 0
    cadence_ms: float = 0.0
    intervals: int = 0
    inside_run: int = 0              # inside fixes in a row during an outside episode (one stray fix ends nothing)
    fence_night_fired: bool = False  # the episode was raised (or upgraded) to red at night
    spo2_low_run: int = 0
    spo2_fired: bool = False
    heard: bool = True               # False for a registered watch not heard from since the gateway started
    quiet_until_ms: int = 0          # silence is not judged before this (after a restart, while backlogs drain)


class EquipmentState(NamedTuple):
    """A machine's rule state; a tuple of plain values, as WatchState."""

    last_seen_ms: int = 0
    session_id: str | None = None
    claimed_by: str | None = None  # the resident who claimed the current session: their safe maximum applies
    silent_fired: bool = False
    over_limit: bool = False  # latched while heart rate stays above the limit: one finding per crossing
    last_count: int = -1      # the newest reading's count, and for how many readings it stood still under power
    stuck_run: int = 0
    stuck_fired: bool = False
    refused_run: int = 0      # readings refused as impossible since the last good one
    sensor_fired: bool = False
    heard: bool = True
    quiet_until_ms: int = 0


_State = TypeVar("_State", WatchState, EquipmentState)


@dataclass(frozen=True, slots=True)
class RuleContext:
    settings: AlertSettings
    directory: Directory
    tz: ZoneInfo

    @classmethod
    def of(cls, settings: AlertSettings, directory: Directory) -> RuleContext:
        return cls(settings, directory, ZoneInfo(settings.timezone))

    def night(self, at_ms: int) -> bool:
        return is_night(at_ms, self.tz, self.settings.night_start, self.settings.night_end)


# A message-driven watch detector: (state, message, resident, context) -> (new state, finding or None).
Detector: TypeAlias = Callable[[WatchState, DeviceMessage, Resident | None, RuleContext], tuple[WatchState, Finding | None]]
WatchResult: TypeAlias = tuple[WatchState, Finding | None]
EquipmentResult: TypeAlias = tuple[EquipmentState, Finding | None]


def _finding(alert_type: AlertType, msg: DeviceMessage, lat: float | None = None, lon: float | None = None,
             detail: str = "",
             severity: Severity | None = None) -> Finding:
    return Finding(alert_type, severity or alert_type.severity, msg.device_id, msg.payload.ts, lat, lon, detail)


def _position(state: WatchState, p: SosPressed | FallDetected | ServiceCall) -> tuple[float | None, float | None]:
    return (p.lat, p.lon) if p.lat is not None else (state.lat, state.lon)


_PRESSES: dict[type[DevicePayload], AlertType] = {
    SosPressed: AlertType.SOS, FallDetected: AlertType.FALL, ServiceCall: AlertType.SERVICE_CALL,
}


def detect_button(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext) -> WatchResult:
    """SOS, fall and service-call keys: every press is a finding; the engine dedups into the open alert."""
    p = msg.payload
    kind = _PRESSES.get(type(p))
    if kind is None or not isinstance(p, SosPressed | FallDetected | ServiceCall):
        return state, None
    lat, lon = _position(state, p)
    detail = f"confidence {p.confidence}" if isinstance(p, FallDetected) and p.confidence is not None else ""
    if p.lat is not None:
        state = with_changes(state, lat=p.lat, lon=p.lon)
    return state, _finding(kind, msg, lat, lon, detail)


def detect_geofence_exit(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext) -> WatchResult:
    """Outside the fence for the whole dwell time; red at night.

    A fix counts as outside only when its whole accuracy circle is (two LBS fixes 1.5 km wide near the
    edge prove nothing), and as inside when its centre is; anything between changes nothing. An outside
    episode ends only after `geofence_inside_fixes` inside fixes in a row, so one stray fix neither
    restarts the dwell nor lets the same wander raise a second alert.
    """
    p = msg.payload
    if not isinstance(p, Location):
        return state, None
    fence = resident.geofence if resident is not None else None
    if fence is None:
        return with_changes(state, lat=p.lat, lon=p.lon), None
    beyond = distance_outside_m(fence, p.lat, p.lon)
    if beyond == 0:
        if state.outside_since_ms is None:
            return with_changes(state, lat=p.lat, lon=p.lon), None
        run = state.inside_run + 1
        if run < ctx.settings.geofence_inside_fixes:
            return with_changes(state, lat=p.lat, lon=p.lon, inside_run=run), None
        return with_changes(state, lat=p.lat, lon=p.lon, outside_since_ms=None, inside_run=0, fence_fired=False,
                            fence_night_fired=False), None
    if beyond <= p.accuracy_m:   # the circle still overlaps the fence: no evidence either way
        return with_changes(state, lat=p.lat, lon=p.lon), None
    since = state.outside_since_ms if state.outside_since_ms is not None else p.ts
    state = with_changes(state, lat=p.lat, lon=p.lon, outside_since_ms=since, inside_run=0)
    if state.fence_fired or p.ts - since < ctx.settings.geofence_dwell_s * 1000:
        return state, None
    night = ctx.night(p.ts)
    return (with_changes(state, fence_fired=True, fence_night_fired=night),
            _finding(AlertType.GEOFENCE_EXIT, msg, p.lat, p.lon, "left the safe area",
                     Severity.RED if night else Severity.ORANGE))


def detect_heart_rate(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext) -> WatchResult:
    """N consecutive readings outside the resident's range; one finding per run."""
    p = msg.payload
    if not isinstance(p, Health) or p.heart_rate is None:
        return state, None
    lo, hi = (resident.heart_rate_range if resident and resident.heart_rate_range
              else ctx.settings.default_heart_rate_range)
    if lo <= p.heart_rate <= hi:
        return (with_changes(state, hr_out_run=0) if state.hr_out_run else state), None
    run = state.hr_out_run + 1
    state = with_changes(state, hr_out_run=run)
    if run != ctx.settings.heart_rate_consecutive:
        return state, None
    return state, _finding(AlertType.HEART_RATE, msg, state.lat, state.lon, f"heart rate {p.heart_rate} outside {lo}-{hi}")


def detect_spo2_low(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext) -> WatchResult:
    """N consecutive readings below the resident's threshold; one finding per episode, like heart rate."""
    p = msg.payload
    if not isinstance(p, Health) or p.spo2 is None:
        return state, None
    threshold = resident.spo2_threshold if resident and resident.spo2_threshold else ctx.settings.spo2_threshold
    if p.spo2 >= threshold:
        return (with_changes(state, spo2_low_run=0, spo2_fired=False) if state.spo2_low_run or state.spo2_fired else state), None
    run = state.spo2_low_run + 1
    state = with_changes(state, spo2_low_run=run)
    if state.spo2_fired or run < ctx.settings.spo2_consecutive:
        return state, None
    return with_changes(state, spo2_fired=True), _finding(AlertType.SPO2_LOW, msg, state.lat, state.lon,
                                                          f"SpO2 {p.spo2}% below {threshold}%")


def detect_battery_low(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext) -> WatchResult:
    p = msg.payload
    if not isinstance(p, WatchStatus):
        return state, None
    low = p.battery <= ctx.settings.battery_low_pct and not p.charging
    if not low:
        return (with_changes(state, battery_fired=False) if state.battery_fired else state), None
    if state.battery_fired:
        return state, None
    found = _finding(AlertType.BATTERY_LOW, msg, state.lat, state.lon, f"battery {p.battery}%")
    return with_changes(state, battery_fired=True), found


# The detectors each watch stream can trigger (each also checks its stream itself, for direct use in tests).
WATCH_DETECTORS: dict[type[DevicePayload], tuple[Detector, ...]] = {
    SosPressed: (detect_button,), FallDetected: (detect_button,), ServiceCall: (detect_button,),
    Location: (detect_geofence_exit,), Health: (detect_heart_rate, detect_spo2_low), WatchStatus: (detect_battery_low,),
}


def watch_seen(state: WatchState, msg: DeviceMessage, now_ms: int) -> WatchState:
    """Bookkeeping every watch message does: last contact, reporting cadence, worn/removed."""
    p = msg.payload
    worn, changed = state.worn, state.worn_changed_ms
    if isinstance(p, WatchStatus) and (p.worn != state.worn or not changed):
        worn, changed = p.worn, now_ms
    nw_fired = state.not_worn_fired and not worn
    cadence, intervals, last_ts = state.cadence_ms, state.intervals, state.last_ts
    gap = p.ts - last_ts
    if last_ts and _CADENCE_MIN_GAP_MS <= gap <= _CADENCE_GAP_MAX_MS:
        cadence = gap if not intervals else cadence + _CADENCE_WEIGHT * (gap - cadence)
        intervals = min(intervals + 1, 1_000)
    if gap > 0 or not last_ts:
        last_ts = p.ts
    return with_changes(state, last_seen_ms=now_ms, worn=worn, worn_changed_ms=changed, silent_fired=False,
                        not_worn_fired=nw_fired, last_ts=last_ts, cadence_ms=cadence, intervals=intervals, heard=True)


def watch_silence_s(state: WatchState, settings: AlertSettings) -> float:
    """How long this watch may be silent: a multiple of its own reporting cadence once that is known,
    within the floor and ceiling; `watch_silent_s` until then."""
    if state.intervals < settings.silence_learn_intervals:
        return settings.watch_silent_s
    learned = settings.silence_cadence_factor * state.cadence_ms / 1000
    return min(max(learned, settings.watch_silent_min_s), settings.watch_silent_max_s)


def watch_tick(device_id: str, state: WatchState, now_ms: int, ctx: RuleContext) -> WatchResult:
    """Silence of a worn (or never heard) watch (orange), a wander going on into the night (red),
    and a watch left off in daytime (yellow). A new finding here needs its first condition in
    `watch_tick_candidates` too: the sweep runs this only on the watches that picks."""
    s = ctx.settings
    if ((state.worn or not state.heard) and not state.silent_fired and now_ms >= state.quiet_until_ms
            and now_ms - state.last_seen_ms > watch_silence_s(state, s) * 1000):
        what = "no message from a worn watch" if state.heard else "not heard from since the gateway started"
        f = Finding(AlertType.WATCH_SILENT, Severity.ORANGE, device_id, now_ms, state.lat, state.lon, what)
        return with_changes(state, silent_fired=True), f
    if state.fence_fired and not state.fence_night_fired and ctx.night(now_ms):
        f = Finding(AlertType.GEOFENCE_EXIT, Severity.RED, device_id, now_ms, state.lat, state.lon,
                    "still outside the safe area at night")
        return with_changes(state, fence_night_fired=True), f
    if (not state.worn and state.worn_changed_ms and not state.not_worn_fired
            and now_ms - state.worn_changed_ms >= s.not_worn_s * 1000 and not ctx.night(now_ms)):
        f = Finding(AlertType.WATCH_NOT_WORN, Severity.YELLOW, device_id, now_ms, state.lat, state.lon, "watch not worn")
        return with_changes(state, not_worn_fired=True), f
    return state, None


def watch_tick_candidates(rows: Mapping[str, tuple[Any, ...]], device_ids: Iterable[str], now_ms: int,
                          ctx: RuleContext) -> list[str]:
    """The watches among `device_ids` that `watch_tick` might find something about at `now_ms`: every one it
    would, and some it would not. A quick look at each state's values (by position, without making the state)
    for what each of its findings needs first: silent for at least the shortest threshold any watch can have,
    a fence episode not yet raised to red, or lying unworn and not yet reported. The silence sweep runs the
    rule only on these: a million watches' sweep made a state and called the rule for each."""
    s = ctx.settings
    silent_before = now_ms - min(s.watch_silent_s, s.watch_silent_min_s) * 1000   # see watch_silence_s
    p = _POSITIONS[WatchState]
    seen, fence, night, worn, changed, reported = (p["last_seen_ms"], p["fence_fired"], p["fence_night_fired"],
                                                   p["worn"], p["worn_changed_ms"], p["not_worn_fired"])
    return [d for d in device_ids if (v := rows.get(d)) is not None
            and (v[seen] < silent_before or (v[fence] and not v[night]) or (not v[worn] and v[changed] and not v[reported]))]


# Below this a machine's power reading is noise, not someone exercising.
_WORKING_POWER_W = 10


def safe_max_hr(resident: Resident | None, ctx: RuleContext) -> tuple[float, str]:
    """The heart rate above which exercise is too much, and how it was found: the maximum a resident's
    doctor set, else a share of 220 - age (their age, or the community's default)."""
    if resident is not None and resident.exercise_max_hr is not None:
        return resident.exercise_max_hr, f"{resident.name}'s exercise maximum"
    age = resident.age if resident is not None else ctx.directory.community.default_age
    who = resident.name if resident is not None else "no resident known"
    return ctx.settings.overexertion_share * (220 - age), f"age {age}, {who}"


def _new_session(state: EquipmentState, session_id: str | None) -> EquipmentState:
    return with_changes(state, session_id=session_id, claimed_by=None, over_limit=False, last_count=-1, stuck_run=0,
                        stuck_fired=False, refused_run=0, sensor_fired=False)


def detect_equipment(state: EquipmentState, msg: DeviceMessage, now_ms: int, ctx: RuleContext) -> EquipmentResult:
    """Session bookkeeping, overexertion (once per crossing of the user's safe maximum) and a count
    that stands still while the machine reports power (a broken sensor)."""
    p = msg.payload
    state = with_changes(state, last_seen_ms=now_ms, silent_fired=False, heard=True)
    if isinstance(p, EquipmentSession):
        if p.event == "start" and p.session_id != state.session_id:
            return _new_session(state, p.session_id), None
        if p.event == "end" and p.session_id == state.session_id:
            return _new_session(state, None), None
        return state, None
    if not isinstance(p, EquipmentTelemetry):
        return state, None
    if p.session_id != state.session_id:   # its start was missed, or came late
        state = _new_session(state, p.session_id)
    state = with_changes(state, refused_run=0)
    state, stuck = _count_stuck(state, p, msg, ctx)
    if stuck is not None or p.heart_rate is None:
        return state, stuck
    user = ctx.directory.resident(state.claimed_by) if state.claimed_by else ctx.directory.equipment_user(msg.device_id)
    limit, basis = safe_max_hr(user, ctx)
    if p.heart_rate <= limit:
        return with_changes(state, over_limit=False), None
    if state.over_limit:  # still above: the open alert already says so
        return state, None
    f = Finding(AlertType.OVEREXERTION, AlertType.OVEREXERTION.severity, msg.device_id, p.ts,
                detail=f"heart rate {p.heart_rate} above {limit:.0f} ({basis})", resident_id=state.claimed_by)
    return with_changes(state, over_limit=True), f


def _count_stuck(state: EquipmentState, p: EquipmentTelemetry, msg: DeviceMessage,
                 ctx: RuleContext) -> EquipmentResult:
    working = p.power_w is not None and p.power_w >= _WORKING_POWER_W
    run = state.stuck_run + 1 if working and p.count == state.last_count else 0
    state = with_changes(state, last_count=p.count, stuck_run=run)
    if run < ctx.settings.counter_stuck_readings or state.stuck_fired:
        return state, None
    f = Finding(AlertType.EQUIPMENT_FAULT, Severity.YELLOW, msg.device_id, p.ts,
                detail=f"count stuck at {p.count} for {run} readings while {p.power_w} W reported")
    return with_changes(state, stuck_fired=True), f


def refused_reading(device_id: str, state: EquipmentState, detail: str, now_ms: int, ctx: RuleContext) -> EquipmentResult:
    """A machine's reading refused for a value no sensor could give (heart rate 0, power 5,000 W): after
    `sensor_fault_readings` in a row, a fault for maintenance, once per session."""
    run = state.refused_run + 1
    state = with_changes(state, last_seen_ms=now_ms, silent_fired=False, heard=True, refused_run=run)
    if run < ctx.settings.sensor_fault_readings or state.sensor_fired:
        return state, None
    f = Finding(AlertType.EQUIPMENT_FAULT, Severity.YELLOW, device_id, now_ms,
                detail=f"{run} readings in a row out of range: {detail}")
    return with_changes(state, sensor_fired=True), f


def equipment_tick(device_id: str, state: EquipmentState, now_ms: int, ctx: RuleContext) -> EquipmentResult:
    """A machine silent for days (to maintenance). A session that stops without `end` is no fault: the
    gateway closes it after an idle timeout (gateway/exercise.py). The sweep runs this only on the machines
    `equipment_tick_candidates` picks."""
    s = ctx.settings
    if (not state.silent_fired and now_ms >= state.quiet_until_ms
            and now_ms - state.last_seen_ms > s.equipment_silent_s * 1000):
        what = "no message" if state.heard else "not heard from since the gateway started"
        f = Finding(AlertType.EQUIPMENT_SILENT, Severity.YELLOW, device_id, now_ms, detail=what)
        return with_changes(state, silent_fired=True), f
    return state, None


def equipment_tick_candidates(rows: Mapping[str, tuple[Any, ...]], device_ids: Iterable[str], now_ms: int,
                              ctx: RuleContext) -> list[str]:
    """The machines among `device_ids` that `equipment_tick` might find silent at `now_ms` (as
    `watch_tick_candidates`)."""
    silent_before = now_ms - ctx.settings.equipment_silent_s * 1000
    seen = _POSITIONS[EquipmentState]["last_seen_ms"]
    return [d for d in device_ids if (v := rows.get(d)) is not None and v[seen] < silent_before]


# Each state field's position, for with_changes().
_POSITIONS: dict[type, dict[str, int]] = {
    cls: {name: i for i, name in enumerate(cls._fields)} for cls in (WatchState, EquipmentState)
}
