"""Alert lifecycle: open -> acknowledged -> resolved, each change an event with time and actor."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from alerts.rules import Finding
from alerts.vocabulary import AlertState, AlertType, Escalation, Severity

SYSTEM = "system"


class TransitionError(ValueError):
    """The alert cannot make that change from its current state."""


@dataclass(frozen=True, slots=True)
class Alert:
    id: int | None
    subject: str            # the resident id, or the device id where no resident is known
    alert_type: AlertType
    severity: Severity
    state: AlertState
    resident_id: str | None
    device_id: str
    opened_ms: int
    updated_ms: int
    lat: float | None
    lon: float | None
    detail: str = ""
    step: int = 0
    step_started_ms: int = 0
    escalation: Escalation = Escalation.RUNNING
    # Where the current round of the plan began: a press after acknowledgement starts the plan over at a
    # new step number, so every round's outbox keys (alert, step, recipient) are new ones.
    plan_base: int = 0
    presses: int = 1                 # presses (or findings) recorded on this alert, bursts counted once each
    burst_start_ms: int = 0          # device time of the press that began the latest burst
    acknowledged_by: str | None = None
    taken_by: str | None = None      # the operator handling it, so two do not work the same alert
    round_started_ms: int = 0        # gateway time the alert opened or last reopened: its acknowledgement clock starts here

    @property
    def saved_id(self) -> int:
        """The store's id: events and notifications are only ever made for an alert the store has saved."""
        if self.id is None:
            raise RuntimeError(f"{self.alert_type} alert of {self.subject} has no id: it was never saved")
        return self.id

    @property
    def round_start_ms(self) -> int:
        """When the acknowledgement clock of the current round started (databases before version 3: opening)."""
        return self.round_started_ms or self.opened_ms

    @property
    def plan_position(self) -> int:
        """The current step's index in the plan (or past its end, in the repeat rounds)."""
        return self.step - self.plan_base


@dataclass(frozen=True, slots=True)
class AlertEvent:
    alert_id: int
    at_ms: int
    kind: str
    actor: str
    detail: str = ""


# Where a press happened, as its event's detail says it: written and read here only.
_AT = re.compile(r"\bat (-?\d+\.\d+),(-?\d+\.\d+)\b")


def at_position(lat: float | None, lon: float | None) -> str:
    """" at <lat>,<lon>" for an event's detail, or "" without a position."""
    return f" at {lat:.6f},{lon:.6f}" if lat is not None and lon is not None else ""


def event_position(ev: AlertEvent) -> tuple[float, float] | None:
    """The position an "opened" or "repeated" event recorded, if the device sent one."""
    m = _AT.search(ev.detail)
    return (float(m[1]), float(m[2])) if m else None


def open_alert(f: Finding, subject: str, resident_id: str | None, now_ms: int) -> Alert:
    return Alert(None, subject, f.alert_type, f.severity, AlertState.OPEN, resident_id, f.device_id, now_ms, now_ms,
                 f.lat, f.lon, f.detail, 0, now_ms, Escalation.RUNNING, burst_start_ms=f.at_ms, round_started_ms=now_ms)


def asks_again(alert: Alert, f: Finding, burst_window_ms: int) -> bool:
    """True when a repeat must notify people again: a new press (outside the burst that is already known)
    on an alert that nobody is being asked about any more (acknowledged, or its plan exhausted).
    Presses ask again, and so does anything red (a wander going on into the night)."""
    if not f.alert_type.is_a_press and f.severity != Severity.RED:
        return False
    if alert.state == AlertState.RESOLVED or (alert.state == AlertState.OPEN and alert.escalation == Escalation.RUNNING):
        return False
    return _new_burst(alert, f, burst_window_ms)


def _new_burst(alert: Alert, f: Finding, burst_window_ms: int) -> bool:
    """The finding comes `burst_window_ms` or more (device time) after the press that began the last burst."""
    return f.at_ms - alert.burst_start_ms >= burst_window_ms


def repeat(alert: Alert, f: Finding, now_ms: int, burst_window_ms: int) -> tuple[Alert, AlertEvent]:
    """A repeat of an open alert's condition: recorded, and the location refreshed if it has one.

    Presses within `burst_window_ms` of the press that began a burst (device time) are one press:
    a frightened person pressing five times in ten seconds is one call for help.
    """
    lat, lon = (f.lat, f.lon) if f.lat is not None else (alert.lat, alert.lon)
    # A repeat can only raise the grade (an orange exit that goes on into the night turns red).
    severity = f.severity if f.severity.rank > Severity(alert.severity).rank else alert.severity
    new_burst = _new_burst(alert, f, burst_window_ms)
    presses = alert.presses + 1 if new_burst else alert.presses
    where = at_position(lat, lon)
    what = f"press {presses}" if new_burst else f"press {presses} (same burst)"
    if severity != alert.severity:
        what += f", now {severity}"
    ev = AlertEvent(alert.saved_id, now_ms, "repeated", f.device_id, f"{what} {f.detail}{where}".replace("  ", " ").strip())
    return replace(alert, lat=lat, lon=lon, severity=severity, updated_ms=now_ms, presses=presses,
                   burst_start_ms=f.at_ms if new_burst else alert.burst_start_ms), ev


def restart(alert: Alert, now_ms: int, why: str) -> tuple[Alert, AlertEvent]:
    """Open the alert again and start its plan over from the first step, at a new step number."""
    step = alert.step + 1
    ev = AlertEvent(alert.saved_id, now_ms, "reopened", SYSTEM, why)
    return replace(alert, state=AlertState.OPEN, escalation=Escalation.RUNNING, step=step, plan_base=step, step_started_ms=now_ms,
                   updated_ms=now_ms, round_started_ms=now_ms), ev


def take(alert: Alert, actor: str, now_ms: int) -> tuple[Alert, AlertEvent]:
    """An operator says "I am handling this": the others see it; escalation goes on until someone accepts."""
    if alert.state == AlertState.RESOLVED:
        raise TransitionError(f"alert {alert.id} is resolved, nothing to take")
    if alert.taken_by == actor:
        raise TransitionError(f"alert {alert.id} is already taken by {actor}")
    detail = f"from {alert.taken_by}" if alert.taken_by else ""
    return replace(alert, taken_by=actor, updated_ms=now_ms), AlertEvent(alert.saved_id, now_ms, "taken", actor, detail)


def acknowledge(alert: Alert, actor: str, now_ms: int) -> tuple[Alert, AlertEvent]:
    if alert.state != AlertState.OPEN:
        raise TransitionError(f"alert {alert.id} is {alert.state}, cannot acknowledge")
    esc = Escalation.STOPPED if alert.escalation == Escalation.RUNNING else alert.escalation
    return (replace(alert, state=AlertState.ACKNOWLEDGED, escalation=esc, updated_ms=now_ms, acknowledged_by=actor),
            AlertEvent(alert.saved_id, now_ms, "acknowledged", actor))


def resolve(alert: Alert, actor: str, now_ms: int, note: str = "") -> tuple[Alert, AlertEvent]:
    if alert.state == AlertState.RESOLVED:
        raise TransitionError(f"alert {alert.id} is already resolved")
    esc = Escalation.STOPPED if alert.escalation == Escalation.RUNNING else alert.escalation
    return (replace(alert, state=AlertState.RESOLVED, escalation=esc, updated_ms=now_ms),
            AlertEvent(alert.saved_id, now_ms, "resolved", actor, note))

