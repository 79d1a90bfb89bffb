"""The alert vocabulary, typed and in one place: grades, alert types and who they concern, alert and
escalation states, notification channels and outbox statuses.

Every member is a `StrEnum`, so it is stored in SQLite and shown in JSON as its plain value and
compares equal to it; code compares members, never spelled-out strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """The red / orange / yellow grading service centres use; each grade has its own acknowledgement
    deadline (`AlertSettings.ack_deadline_s`)."""

    RED = "red"
    ORANGE = "orange"
    YELLOW = "yellow"

    @property
    def rank(self) -> int:
        """Higher is more urgent."""
        return _RANK[self]

    @classmethod
    def sql_urgency(cls, column: str) -> str:
        """An SQL expression ordering rows by this grade, most urgent first (0 = red)."""
        whens = " ".join(f"WHEN '{s.value}' THEN {len(cls) - 1 - s.rank}" for s in cls)
        return f"CASE {column} {whens} ELSE {len(cls)} END"


_RANK = {Severity.YELLOW: 0, Severity.ORANGE: 1, Severity.RED: 2}


class Audience(StrEnum):
    """Whom an alert is about, which decides its subject and its escalation plan."""

    WEARER = "wearer"                # the resident wearing the watch
    EQUIPMENT_USER = "equipment_user"  # the person on a machine (its assigned resident, if any)
    MAINTENANCE = "maintenance"      # the device itself: to the maintenance line


class AlertType(StrEnum):
    SOS = "sos"
    FALL = "fall"
    SERVICE_CALL = "service_call"
    GEOFENCE_EXIT = "geofence_exit"
    HEART_RATE = "heart_rate"
    SPO2_LOW = "spo2_low"
    OVEREXERTION = "overexertion"
    WATCH_SILENT = "watch_silent"
    BATTERY_LOW = "battery_low"
    WATCH_NOT_WORN = "watch_not_worn"
    EQUIPMENT_SILENT = "equipment_silent"
    EQUIPMENT_FAULT = "equipment_fault"
    DEVICE_CLOCK_WRONG = "device_clock_wrong"

    @property
    def severity(self) -> Severity:
        """The usual grade; a finding may raise it (a geofence exit at night is red)."""
        return ALERT_TYPES[self].severity

    @property
    def audience(self) -> Audience:
        return ALERT_TYPES[self].audience

    @property
    def is_a_press(self) -> bool:
        """A person asking for help: a later press on an accepted alert must reach someone again."""
        return ALERT_TYPES[self].press


@dataclass(frozen=True, slots=True)
class AlertKind:
    severity: Severity
    audience: Audience
    press: bool = False


ALERT_TYPES: dict[AlertType, AlertKind] = {
    AlertType.SOS: AlertKind(Severity.RED, Audience.WEARER, press=True),
    AlertType.FALL: AlertKind(Severity.RED, Audience.WEARER, press=True),
    AlertType.SERVICE_CALL: AlertKind(Severity.YELLOW, Audience.WEARER, press=True),
    AlertType.GEOFENCE_EXIT: AlertKind(Severity.ORANGE, Audience.WEARER),
    AlertType.HEART_RATE: AlertKind(Severity.ORANGE, Audience.WEARER),
    AlertType.SPO2_LOW: AlertKind(Severity.ORANGE, Audience.WEARER),
    AlertType.OVEREXERTION: AlertKind(Severity.ORANGE, Audience.EQUIPMENT_USER),
    AlertType.WATCH_SILENT: AlertKind(Severity.ORANGE, Audience.WEARER),
    AlertType.BATTERY_LOW: AlertKind(Severity.YELLOW, Audience.WEARER),
    AlertType.WATCH_NOT_WORN: AlertKind(Severity.YELLOW, Audience.WEARER),
    AlertType.EQUIPMENT_SILENT: AlertKind(Severity.YELLOW, Audience.MAINTENANCE),
    AlertType.EQUIPMENT_FAULT: AlertKind(Severity.YELLOW, Audience.MAINTENANCE),
    AlertType.DEVICE_CLOCK_WRONG: AlertKind(Severity.YELLOW, Audience.MAINTENANCE),
}


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Escalation(StrEnum):
    RUNNING = "running"      # steps go on until someone accepts
    STOPPED = "stopped"      # someone accepted (or resolved)
    EXHAUSTED = "exhausted"  # the plan ran out with nobody accepting: the operators must act


class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"


class OutboxStatus(StrEnum):
    """pending -> sending -> sent, or failed; `unknown` when the request may have reached the provider
    (reconciled with its records before anything is resent); `operator` when only a person can tell;
    `cancelled` when the alert was accepted or resolved before the row went out."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    OPERATOR = "operator"
    CANCELLED = "cancelled"
