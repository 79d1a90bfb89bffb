"""Escalation: which step an open alert is on and when it moves on. Pure; no sleeps."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from alerts.directory import EscalationStep, Plan
from alerts.lifecycle import SYSTEM, Alert, AlertEvent
from alerts.vocabulary import AlertState, Channel, Escalation, OutboxStatus

# Outbox states after which an attempt cannot reach anyone.
FAILED_STATES = frozenset({OutboxStatus.FAILED, OutboxStatus.OPERATOR})


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What the escalation needs to know of one notification attempt of the current step: its outbox
    status and whether the provider reported it undelivered (busy, no answer, failed...)."""

    status: str
    delivery_failed: bool = False

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATES or self.delivery_failed


@dataclass(frozen=True, slots=True)
class StartStep:
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class Exhaust:
    reason: str


def plan_step(plan: Plan, index: int, repeat_rounds: int = 0) -> EscalationStep | None:
    """The step at escalation position `index`: the plan once, then its calls again `repeat_rounds` times.

    Positions only grow, so every round's notifications have outbox keys of their own.
    """
    if index < len(plan):
        return plan[index]
    calls = [step for step in plan if step.channel == Channel.VOICE]
    extra = index - len(plan)
    if not calls or extra >= repeat_rounds * len(calls):
        return None
    return calls[extra % len(calls)]


def step_wait_s(step: EscalationStep, deadline_s: float) -> float:
    return step.wait_s or deadline_s


def _current_wait_s(plan: Plan, alert: Alert, deadline_s: float, repeat_rounds: int) -> float:
    """How long the alert's current step waits; a running alert is always on a step of its plan,
    and were it not, the severity's deadline applies."""
    step = plan_step(plan, alert.plan_position, repeat_rounds)
    return deadline_s if step is None else step_wait_s(step, deadline_s)


def next_action(plan: Plan, alert: Alert, attempts: Iterable[AttemptOutcome], now_ms: int,
                deadline_s: float, repeat_rounds: int = 0) -> StartStep | Exhaust | None:
    """The escalation's next move for an alert on its current step, or None to keep waiting."""
    if alert.state != AlertState.OPEN or alert.escalation != Escalation.RUNNING:
        return None
    attempts = tuple(attempts)
    # A step with nobody to reach (no family on file) or whose every attempt failed is over now.
    if not attempts or all(a.failed for a in attempts):
        reason = "step failed" if attempts else "step had no recipients"
    elif now_ms >= alert.step_started_ms + _current_wait_s(plan, alert, deadline_s, repeat_rounds) * 1000:
        reason = "deadline passed"
    else:
        return None
    if plan_step(plan, alert.plan_position + 1, repeat_rounds) is not None:
        return StartStep(alert.step + 1, reason)
    return Exhaust(reason)


def apply(alert: Alert, action: StartStep | Exhaust, now_ms: int) -> tuple[Alert, AlertEvent]:
    """The alert after the action, and the event that records it."""
    if isinstance(action, StartStep):
        ev = AlertEvent(alert.saved_id, now_ms, "escalated", SYSTEM, f"step {action.index}: {action.reason}")
        return replace(alert, step=action.index, step_started_ms=now_ms, updated_ms=now_ms), ev
    ev = AlertEvent(alert.saved_id, now_ms, "escalation_exhausted", SYSTEM, action.reason)
    return replace(alert, escalation=Escalation.EXHAUSTED, updated_ms=now_ms), ev
