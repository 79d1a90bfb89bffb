"""Alert lifecycle: open -> acknowledged -> resolved, each change an event with time and actor."""
from __future__ import annotations

from dataclasses import dataclass, replace

from alerts.rules import Finding

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
RUNNING, STOPPED, EXHAUSTED = "running", "stopped", "exhausted"
SYSTEM = "system"


class TransitionError(ValueError):
    """The alert cannot make that change from its current state."""


@dataclass(frozen=True, slots=True)
class Alert:
    id: int | None
    subject: str            # the resident id, or the device id where no resident is known
    alert_type: str
    severity: str
    state: str
    resident_id: str | None
    device_id: str
    opened_ms: int
    updated_ms: int
    lat: float | None
    lon: float | None
    detail: str = ""
    step: int = 0
    step_started_ms: int = 0
    escalation: str = RUNNING


@dataclass(frozen=True, slots=True)
class AlertEvent:
    alert_id: int
    at_ms: int
    kind: str
    actor: str
    detail: str = ""


def open_alert(f: Finding, subject: str, resident_id: str | None, now_ms: int) -> Alert:
    return Alert(None, subject, f.alert_type, f.severity, OPEN, resident_id, f.device_id, now_ms, now_ms,
                 f.lat, f.lon, f.detail, 0, now_ms, RUNNING)


def repeat(alert: Alert, f: Finding, now_ms: int) -> tuple[Alert, AlertEvent]:
    """A repeat of an open alert's condition: recorded, and the location refreshed if it has one."""
    lat, lon = (f.lat, f.lon) if f.lat is not None else (alert.lat, alert.lon)
    # A repeat can only raise the grade (an orange exit that goes on into the night turns red).
    severity = f.severity if _rank(f.severity) > _rank(alert.severity) else alert.severity
    where = f" at {lat:.6f},{lon:.6f}" if lat is not None else ""
    ev = AlertEvent(alert.id, now_ms, "repeated", f.device_id, f"{f.detail}{where}".strip())
    return replace(alert, lat=lat, lon=lon, severity=severity, updated_ms=now_ms), ev


def acknowledge(alert: Alert, actor: str, now_ms: int) -> tuple[Alert, AlertEvent]:
    if alert.state != OPEN:
        raise TransitionError(f"alert {alert.id} is {alert.state}, cannot acknowledge")
    esc = STOPPED if alert.escalation == RUNNING else alert.escalation
    return replace(alert, state=ACKNOWLEDGED, escalation=esc, updated_ms=now_ms), AlertEvent(alert.id, now_ms, "acknowledged", actor)


def resolve(alert: Alert, actor: str, now_ms: int, note: str = "") -> tuple[Alert, AlertEvent]:
    if alert.state == RESOLVED:
        raise TransitionError(f"alert {alert.id} is already resolved")
    esc = STOPPED if alert.escalation == RUNNING else alert.escalation
    return replace(alert, state=RESOLVED, escalation=esc, updated_ms=now_ms), AlertEvent(alert.id, now_ms, "resolved", actor, note)


def _rank(severity: str) -> int:
    return {"yellow": 0, "orange": 1, "red": 2}.get(severity, 0)
