"""Escalation as a pure function of plan, alert, attempt outcomes and time."""
from __future__ import annotations

from dataclasses import replace

from alerts.directory import EscalationStep
from alerts.escalation import AttemptOutcome, Exhaust, StartStep, apply, next_action, plan_step
from alerts.lifecycle import Alert, acknowledge

PLAN = (EscalationStep(channel="voice", target="service_centre"),
        EscalationStep(channel="sms", target="family_all", wait_s=30),)
T0 = 1_800_000_000_000
ALERT = Alert(1, "r-1", "sos", "red", "open", "r-1", "w1", T0, T0, None, None, "", 0, T0, "running")
SENT = AttemptOutcome("sent")


def test_waits_until_the_ack_deadline():
    assert next_action(PLAN, ALERT, [SENT], T0 + 59_999, 60) is None
    assert next_action(PLAN, ALERT, [SENT], T0 + 60_000, 60) == StartStep(1, "deadline passed")


def test_a_step_whose_every_attempt_failed_moves_on_at_once():
    failed = [AttemptOutcome("failed"), AttemptOutcome("sent", delivery_failed=True)]
    assert next_action(PLAN, ALERT, failed, T0 + 1, 60) == StartStep(1, "step failed")


def test_one_live_attempt_keeps_the_step_waiting():
    assert next_action(PLAN, ALERT, [AttemptOutcome("failed"), SENT], T0 + 1, 60) is None


def test_a_step_with_nobody_to_reach_is_skipped():
    assert next_action(PLAN, ALERT, [], T0, 60) == StartStep(1, "step had no recipients")


def test_step_wait_overrides_the_deadline_and_the_last_step_exhausts():
    on_last = replace(ALERT, step=1, step_started_ms=T0)
    assert next_action(PLAN, on_last, [SENT], T0 + 29_999, 60) is None
    assert next_action(PLAN, on_last, [SENT], T0 + 30_000, 60) == Exhaust("deadline passed")


def test_accepted_alert_stops_escalating():
    accepted, _ = acknowledge(ALERT, "+15555550100", T0 + 5)
    assert next_action(PLAN, accepted, [SENT], T0 + 999_999, 60) is None


def test_apply_records_the_step_change_as_an_event():
    alert, ev = apply(ALERT, StartStep(1, "deadline passed"), T0 + 60_000)
    assert (alert.step, alert.step_started_ms) == (1, T0 + 60_000)
    assert (ev.kind, ev.actor, ev.at_ms) == ("escalated", "system", T0 + 60_000)


def test_a_red_plan_goes_round_its_calls_again_then_exhausts():
    on_last = replace(ALERT, step=1, step_started_ms=T0)
    assert next_action(PLAN, on_last, [SENT], T0 + 30_000, 60, repeat_rounds=1) == StartStep(2, "deadline passed")
    again = replace(ALERT, step=2, step_started_ms=T0)
    assert plan_step(PLAN, 2, repeat_rounds=1) == PLAN[0]           # the only call step, once more
    assert next_action(PLAN, again, [SENT], T0 + 60_000, 60, repeat_rounds=1) == Exhaust("deadline passed")
    assert plan_step(PLAN, 3, repeat_rounds=1) is None
