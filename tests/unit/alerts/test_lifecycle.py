"""Alert transitions as pure functions: taking an alert on, and the acknowledgement clock of each round."""
from __future__ import annotations

from dataclasses import replace

import pytest

from alerts import lifecycle
from alerts.lifecycle import TransitionError, open_alert
from alerts.rules import Finding
from alerts.vocabulary import AlertState, AlertType, Severity
from tests.unit.alert_support import DAY


def sos(alert_id: int = 7):
    return replace(open_alert(Finding(AlertType.SOS, Severity.RED, "w1", DAY), "r-1", "r-1", DAY), id=alert_id)


def test_taking_an_alert_names_the_operator_and_says_from_whom_it_was_taken_over():
    a, ev = lifecycle.take(sos(), "chen", DAY + 1)
    assert a.taken_by == "chen" and a.state == AlertState.OPEN and (ev.kind, ev.actor, ev.detail) == ("taken", "chen", "")
    a, ev = lifecycle.take(a, "lin", DAY + 2)
    assert a.taken_by == "lin" and ev.detail == "from chen"


def test_taking_twice_or_taking_a_resolved_alert_is_refused():
    a, _ = lifecycle.take(sos(), "chen", DAY + 1)
    with pytest.raises(TransitionError):
        lifecycle.take(a, "chen", DAY + 2)
    resolved, _ = lifecycle.resolve(a, "chen", DAY + 3, "fine")
    with pytest.raises(TransitionError):
        lifecycle.take(resolved, "lin", DAY + 4)


def test_the_acknowledgement_clock_starts_at_opening_and_again_at_each_reopening():
    a = sos()
    assert a.round_start_ms == DAY
    acked, _ = lifecycle.acknowledge(a, "chen", DAY + 10)
    reopened, ev = lifecycle.restart(acked, DAY + 90_000, "pressed again")
    assert reopened.round_start_ms == DAY + 90_000 and ev.kind == "reopened"


def test_an_alert_from_before_version_3_counts_from_its_opening():
    assert replace(sos(), round_started_ms=0).round_start_ms == DAY


def test_a_press_position_written_into_an_event_reads_back_and_none_is_written_without_one():
    from alerts.lifecycle import AlertEvent, at_position, event_position

    ev = AlertEvent(7, DAY, "repeated", "w1", f"press 2{at_position(31.2304, -121.4737)}")
    assert event_position(ev) == (31.2304, -121.4737)
    assert at_position(None, None) == "" and event_position(AlertEvent(7, DAY, "repeated", "w1", "press 2")) is None
