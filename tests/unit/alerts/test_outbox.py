"""The outbox on its own: one row per (alert, step, recipient), claimed once, settled forward only."""
from __future__ import annotations

import pytest

from alerts.lifecycle import open_alert
from alerts.notifiers.twilio import moves_forward
from alerts.outbox import Outbox
from alerts.rules import Finding
from alerts.store import AlertStore, Database
from alerts.vocabulary import AlertType, Channel, OutboxStatus, Severity
from tests.fixtures.postgres import database
from tests.unit.alert_support import DAY

DUTY, DAUGHTER = "+15555550100", "+15555550111"


@pytest.fixture
def db(tmp_path, store_backend):
    d = Database(database(tmp_path, "alerts.db"))
    yield d
    d.close()


def alert(db, severity: Severity) -> int:
    kind = AlertType.SOS if severity == Severity.RED else AlertType.BATTERY_LOW
    return AlertStore(db).insert(open_alert(Finding(kind, severity, f"w-{severity}", DAY), f"r-{severity}", None, DAY))


def test_an_attempt_is_queued_once_per_alert_step_and_recipient(db):
    outbox, a = Outbox(db), alert(db, Severity.RED)
    assert outbox.add(a, "0", DUTY, Channel.VOICE, "zh-CN", "call", DAY)
    assert not outbox.add(a, "0", DUTY, Channel.VOICE, "zh-CN", "call again", DAY)
    assert outbox.add(a, "1", DUTY, Channel.VOICE, "zh-CN", "next step", DAY)
    assert [(r.step, r.status) for r in outbox.of_alert(a)] == [("0", OutboxStatus.PENDING), ("1", OutboxStatus.PENDING)]


def test_a_row_is_claimed_by_one_sender_only(db):
    outbox, a = Outbox(db), alert(db, Severity.RED)
    outbox.add(a, "0", DUTY, Channel.VOICE, "zh-CN", "call", DAY)
    [row] = outbox.of_alert(a)
    assert outbox.claim(row.id, DAY) and not outbox.claim(row.id, DAY)
    assert outbox.get(row.id).status == OutboxStatus.SENDING


def test_red_rows_come_first_whatever_their_age(db):
    outbox = Outbox(db)
    yellow, red = alert(db, Severity.YELLOW), alert(db, Severity.RED)
    outbox.add(yellow, "0", DAUGHTER, Channel.SMS, "zh-CN", "battery", DAY)
    outbox.add(red, "0", DUTY, Channel.VOICE, "zh-CN", "sos", DAY + 1)
    assert [(r.alert_id, sev) for r, sev in outbox.due_ranked(DAY + 1, 10)] == [(red, Severity.RED), (yellow, Severity.YELLOW)]


def test_a_row_left_sending_by_a_crash_becomes_unknown_never_pending(db):
    outbox, a = Outbox(db), alert(db, Severity.RED)
    outbox.add(a, "0", DUTY, Channel.VOICE, "zh-CN", "call", DAY)
    [row] = outbox.of_alert(a)
    outbox.claim(row.id, DAY)
    assert [r.id for r in outbox.recover_after_crash(DAY + 5)] == [row.id]
    assert outbox.get(row.id).status == OutboxStatus.UNKNOWN
    assert outbox.due_ranked(DAY + 5, 10) == []


def test_a_delivery_status_only_moves_forward_and_settles_an_unknown_outcome(db):
    outbox, a = Outbox(db), alert(db, Severity.RED)
    outbox.add(a, "0", DAUGHTER, Channel.SMS, "zh-CN", "sms", DAY)
    [row] = outbox.of_alert(a)
    outbox.claim(row.id, DAY)
    outbox.recover_after_crash(DAY)
    assert outbox.record_delivery(row.id, "delivered", DAY + 1, "SM1", moves_forward).status == OutboxStatus.SENT
    assert outbox.record_delivery(row.id, "sent", DAY + 2, "SM1", moves_forward) is None   # late and stale
    assert outbox.get(row.id).delivery == "delivered"


def test_cancelling_leaves_follow_ups_and_sent_rows_alone(db):
    outbox, a = Outbox(db), alert(db, Severity.RED)
    outbox.add(a, "0", DUTY, Channel.VOICE, "zh-CN", "call", DAY)
    outbox.add(a, "1", DAUGHTER, Channel.SMS, "zh-CN", "sms", DAY)
    outbox.add(a, "accepted", DAUGHTER, Channel.SMS, "zh-CN", "accepted", DAY)
    first = outbox.of_alert(a)[0]
    outbox.claim(first.id, DAY)
    outbox.set_status(first.id, OutboxStatus.SENT, DAY)
    assert outbox.cancel_pending(a, DAY + 1) == 1
    assert [(r.step, r.status) for r in outbox.of_alert(a)] == [
        ("0", OutboxStatus.SENT), ("1", OutboxStatus.CANCELLED), ("accepted", OutboxStatus.PENDING)]


def test_alerts_with_attempts_only_a_person_can_settle_are_counted(db):
    outbox, red, yellow = Outbox(db), alert(db, Severity.RED), alert(db, Severity.YELLOW)
    for who in (DUTY, DAUGHTER):
        outbox.add(red, "0", who, Channel.VOICE, "zh-CN", "call", DAY)
    outbox.add(yellow, "0", DUTY, Channel.SMS, "zh-CN", "sms", DAY)
    rows = outbox.of_alert(red)
    for row in rows:
        outbox.set_status(row.id, OutboxStatus.OPERATOR, DAY + 1)
    assert outbox.needing_operator() == {red: 2}
