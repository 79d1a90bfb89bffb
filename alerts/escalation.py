"""Escalation: which step an open alert is on and when it moves on. Pure; no sleeps."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from alerts.directory import Plan
from alerts.lifecycle import EXHAUSTED, OPEN, RUNNING, Alert, AlertEvent, SYSTEM

# Outbox states and provider statuses after which an attempt cannot reach anyone.
FAILED_STATES = frozenset({"failed", "operator"})
FAILED_DELIVERY = frozenset({"undelivered", "failed", "busy", "no-answer", "canceled"})


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What the escalation needs to know of one notification attempt of the current step."""

    status: str
    delivery: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATES or self.delivery in FAILED_DELIVERY


@dataclass(frozen=True, slots=True)
class StartStep:
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class Exhaust:
    reason: str


def step_wait_s(plan: Plan, index: int, deadline_s: float) -> float:
    return plan[index].wait_s or deadline_s


def next_action(plan: Plan, alert: Alert, attempts: Iterable[AttemptOutcome], now_ms: int,
                deadline_s: float) -> StartStep | Exhaust | None:
    """The escalation's next move for an alert on its current step, or None to keep waiting."""
    if alert.state != OPEN or alert.escalation != RUNNING:
        return None
    attempts = tuple(attempts)
    # A step with nobody to reach (no family on file) or whose every attempt failed is over now.
    if not attempts or all(a.failed for a in attempts):
        reason = "step failed" if attempts else "step had no recipients"
    elif now_ms >= alert.step_started_ms + step_wait_s(plan, alert.step, deadline_s) * 1000:
        reason = "deadline passed"
    else:
        return None
    if alert.step + 1 < len(plan):
        return StartStep(alert.step + 1, reason)
    return Exhaust(reason)


def apply(alert: Alert, action: StartStep | Exhaust, now_ms: int) -> tuple[Alert, AlertEvent]:
    """The alert after the action, and the event that records it."""
    if isinstance(action, StartStep):
        ev = AlertEvent(alert.id, now_ms, "escalated", SYSTEM, f"step {action.index}: {action.reason}")
        return replace(alert, step=action.index, step_started_ms=now_ms, updated_ms=now_ms), ev
    ev = AlertEvent(alert.id, now_ms, "escalation_exhausted", SYSTEM, action.reason)
    return replace(alert, escalation=EXHAUSTED, updated_ms=now_ms), ev
