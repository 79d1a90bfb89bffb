"""Alert rules: one detector per alert type, pure functions of device state, message and time.

Each detector takes the device's frozen state and returns the new state and at
most one `Finding`. Message-driven detectors time their windows by the device's
own `ts`; tick-driven ones (silence, not worn, stalled sessions) by the
gateway clock passed in. A detector that fired remembers it in the state so a
lasting condition raises one finding per episode, not one per message.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from zoneinfo import ZoneInfo

from alerts.config import AlertSettings
from alerts.directory import Directory, Resident
from alerts.geo import inside, is_night
from gateway.models import (
    DeviceMessage, EquipmentSession, EquipmentTelemetry, FallDetected, Health, Location, ServiceCall, SosPressed, WatchStatus,
)

RED, ORANGE, YELLOW = "red", "orange", "yellow"
SEVERITY = {
    "sos": RED, "fall": RED, "geofence_exit": ORANGE, "heart_rate": ORANGE, "spo2_low": ORANGE, "overexertion": ORANGE,
    "watch_silent": ORANGE, "service_call": YELLOW, "battery_low": YELLOW, "watch_not_worn": YELLOW,
    "equipment_silent": YELLOW, "equipment_fault": YELLOW,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition worth an alert, before the engine turns it into one."""

    alert_type: str
    severity: str
    device_id: str
    at_ms: int
    lat: float | None = None
    lon: float | None = None
    detail: str = ""


def replace(state, **changes):
    """dataclasses.replace for the rule states, about three times faster: it runs for every message."""
    cls = type(state)
    return cls(*[changes[f] if f in changes else getattr(state, f) for f in _FIELDS[cls]])


@dataclass(frozen=True, slots=True)
class WatchState:
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


@dataclass(frozen=True, slots=True)
class EquipmentState:
    last_seen_ms: int = 0
    session_id: str | None = None
    last_telemetry_ms: int = 0
    stall_fired: bool = False
    silent_fired: bool = False
    over_limit: bool = False  # latched while heart rate stays above the limit: one finding per crossing


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


def _finding(alert_type: str, msg: DeviceMessage, lat=None, lon=None, detail: str = "", severity: str | None = None) -> Finding:
    return Finding(alert_type, severity or SEVERITY[alert_type], msg.device_id, msg.payload.ts, lat, lon, detail)


def _position(state: WatchState, p) -> tuple[float | None, float | None]:
    return (p.lat, p.lon) if p.lat is not None else (state.lat, state.lon)


def detect_button(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext):
    """SOS, fall and service-call keys: every press is a finding; the engine dedups into the open alert."""
    p = msg.payload
    kind = {SosPressed: "sos", FallDetected: "fall", ServiceCall: "service_call"}.get(type(p))
    if kind is None:
        return state, None
    lat, lon = _position(state, p)
    detail = f"confidence {p.confidence}" if isinstance(p, FallDetected) and p.confidence is not None else ""
    if p.lat is not None:
        state = replace(state, lat=p.lat, lon=p.lon)
    return state, _finding(kind, msg, lat, lon, detail)


def detect_geofence_exit(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext):
    """Outside the fence for the whole dwell time; red at night."""
    p = msg.payload
    if not isinstance(p, Location):
        return state, None
    if resident is None or resident.geofence is None or inside(resident.geofence, p.lat, p.lon):
        return replace(state, lat=p.lat, lon=p.lon, outside_since_ms=None, fence_fired=False), None
    since = state.outside_since_ms if state.outside_since_ms is not None else p.ts
    state = replace(state, lat=p.lat, lon=p.lon, outside_since_ms=since)
    if state.fence_fired or p.ts - since < ctx.settings.geofence_dwell_s * 1000:
        return state, None
    severity = RED if ctx.night(p.ts) else ORANGE
    return replace(state, fence_fired=True), _finding("geofence_exit", msg, p.lat, p.lon, "left the safe area", severity)


def detect_heart_rate(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext):
    """N consecutive readings outside the resident's range; one finding per run."""
    p = msg.payload
    if not isinstance(p, Health) or p.heart_rate is None:
        return state, None
    lo, hi = (resident.heart_rate_range if resident and resident.heart_rate_range else ctx.settings.default_heart_rate_range)
    if lo <= p.heart_rate <= hi:
        return (replace(state, hr_out_run=0) if state.hr_out_run else state), None
    run = state.hr_out_run + 1
    state = replace(state, hr_out_run=run)
    if run != ctx.settings.heart_rate_consecutive:
        return state, None
    return state, _finding("heart_rate", msg, state.lat, state.lon, f"heart rate {p.heart_rate} outside {lo}-{hi}")


def detect_spo2_low(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext):
    p = msg.payload
    if not isinstance(p, Health) or p.spo2 is None or p.spo2 >= ctx.settings.spo2_threshold:
        return state, None
    return state, _finding("spo2_low", msg, state.lat, state.lon, f"SpO2 {p.spo2}%")


def detect_battery_low(state: WatchState, msg: DeviceMessage, resident: Resident | None, ctx: RuleContext):
    p = msg.payload
    if not isinstance(p, WatchStatus):
        return state, None
    low = p.battery <= ctx.settings.battery_low_pct and not p.charging
    if not low:
        return (replace(state, battery_fired=False) if state.battery_fired else state), None
    if state.battery_fired:
        return state, None
    return replace(state, battery_fired=True), _finding("battery_low", msg, state.lat, state.lon, f"battery {p.battery}%")


# The detectors each watch stream can trigger (each also checks its stream itself, for direct use in tests).
WATCH_DETECTORS = {
    SosPressed: (detect_button,), FallDetected: (detect_button,), ServiceCall: (detect_button,),
    Location: (detect_geofence_exit,), Health: (detect_heart_rate, detect_spo2_low), WatchStatus: (detect_battery_low,),
}


def watch_seen(state: WatchState, msg: DeviceMessage, now_ms: int) -> WatchState:
    """Bookkeeping every watch message does: last contact, worn/removed."""
    p = msg.payload
    worn, changed = state.worn, state.worn_changed_ms
    if isinstance(p, WatchStatus) and (p.worn != state.worn or not changed):
        worn, changed = p.worn, now_ms
    nw_fired = state.not_worn_fired and not worn
    return replace(state, last_seen_ms=now_ms, worn=worn, worn_changed_ms=changed, silent_fired=False, not_worn_fired=nw_fired)


def watch_tick(device_id: str, state: WatchState, now_ms: int, ctx: RuleContext):
    """Silence of a worn watch (orange) and a watch left off in daytime (yellow)."""
    s = ctx.settings
    if state.worn and not state.silent_fired and now_ms - state.last_seen_ms > s.watch_silent_s * 1000:
        f = Finding("watch_silent", ORANGE, device_id, now_ms, state.lat, state.lon, "no message from a worn watch")
        return replace(state, silent_fired=True), f
    if (not state.worn and state.worn_changed_ms and not state.not_worn_fired
            and now_ms - state.worn_changed_ms >= s.not_worn_s * 1000 and not ctx.night(now_ms)):
        f = Finding("watch_not_worn", YELLOW, device_id, now_ms, state.lat, state.lon, "watch not worn")
        return replace(state, not_worn_fired=True), f
    return state, None


def detect_equipment(state: EquipmentState, msg: DeviceMessage, now_ms: int, ctx: RuleContext):
    """Session bookkeeping and overexertion (heart rate above a share of 220 - age)."""
    p = msg.payload
    state = replace(state, last_seen_ms=now_ms, silent_fired=False)
    if isinstance(p, EquipmentSession):
        sid = p.session_id if p.event == "start" else None
        return replace(state, session_id=sid, last_telemetry_ms=now_ms, stall_fired=False, over_limit=False), None
    if not isinstance(p, EquipmentTelemetry):
        return state, None
    state = replace(state, session_id=p.session_id, last_telemetry_ms=now_ms, stall_fired=False)
    age = ctx.directory.equipment_user_age(msg.device_id)
    limit = ctx.settings.overexertion_share * (220 - age)
    if p.heart_rate is None:
        return state, None
    if p.heart_rate <= limit:
        return replace(state, over_limit=False), None
    if state.over_limit:  # still above: the open alert already says so
        return state, None
    return (replace(state, over_limit=True),
            _finding("overexertion", msg, detail=f"heart rate {p.heart_rate} above {limit:.0f} (age {age})"))


def equipment_tick(device_id: str, state: EquipmentState, now_ms: int, ctx: RuleContext):
    """A session that stopped reporting (fault) or a machine silent for days (to maintenance)."""
    s = ctx.settings
    if state.session_id and not state.stall_fired and now_ms - state.last_telemetry_ms > s.session_stall_s * 1000:
        f = Finding("equipment_fault", YELLOW, device_id, now_ms, detail=f"session {state.session_id} stopped reporting")
        return replace(state, stall_fired=True), f
    if not state.silent_fired and now_ms - state.last_seen_ms > s.equipment_silent_s * 1000:
        return replace(state, silent_fired=True), Finding("equipment_silent", YELLOW, device_id, now_ms, detail="no message")
    return state, None


# Field order for replace(), computed once per state class.
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in (WatchState, EquipmentState)}
