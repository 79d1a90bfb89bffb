"""The dispatch worker: retries, failures, unknown outcomes and crash recovery."""
from __future__ import annotations

import threading

from alerts.config import AlertSettings, RetryPolicy
from alerts.dispatch import retry_delay_s
from alerts.notifiers.base import PermanentSendError, RetryableSendError, UnknownOutcomeError
from tests.unit.alert_support import DAY, DUTY, FakeClock, FakeNotifier, make_service, msg

SOS = msg("w1", "sos", 1, DAY, lat=31.2, lon=121.4)


def only_row(svc):
    [row] = svc.engine.outbox.of_alert(svc.alerts()[0].id)
    return row


def test_sends_with_status_callback_and_gather_urls_and_records_the_sid(tmp_path):
    fake = FakeNotifier()
    svc = make_service(tmp_path, fake)
    svc.observe([SOS], DAY)
    svc.dispatcher.run_once()
    [n] = fake.sent
    row = only_row(svc)
    assert (n.channel, n.to, n.attempt_id) == ("voice", DUTY["service_centre"], str(row.id))
    assert n.status_callback_url == f"https://gw.example.test/twilio/status/{row.id}"
    assert n.gather_action_url == f"https://gw.example.test/twilio/gather/{row.id}"
    assert (row.status, row.provider_id, row.delivery) == ("sent", "SM" + "1".zfill(32), "queued")
    svc.dispatcher.run_once()
    assert len(fake.sent) == 1
    svc.close()


def test_retryable_error_is_retried_after_a_backoff(tmp_path):
    clock = FakeClock()
    fake = FakeNotifier(RetryableSendError("429 too many", code=20429))
    svc = make_service(tmp_path, fake, clock)
    svc.observe([SOS], DAY)
    svc.dispatcher.run_once()
    row = only_row(svc)
    assert (row.status, row.attempts) == ("pending", 1) and row.due_ms == DAY + 1000  # base 1 s, jitter centred
    svc.dispatcher.run_once()
    assert len(fake.sent) == 1
    clock.advance(1)
    svc.dispatcher.run_once()
    assert len(fake.sent) == 2 and only_row(svc).status == "sent"
    svc.close()


def test_retries_are_bounded_then_the_plan_moves_on(tmp_path):
    clock = FakeClock()
    fake = FakeNotifier(*[RetryableSendError("503")] * 2)
    svc = make_service(tmp_path, fake, clock, retry=RetryPolicy(max_attempts=2))
    svc.observe([SOS], DAY)
    svc.dispatcher.run_once()
    clock.advance(10)
    svc.dispatcher.run_once()
    alert = svc.alerts()[0]
    rows = svc.engine.outbox.of_alert(alert.id)
    assert rows[0].status == "failed" and "gave up after 2" in rows[0].last_error
    assert alert.step == 1 and {r.step for r in rows} == {"0", "1"}
    svc.close()


def test_permanent_failure_fails_the_row_and_advances_the_plan(tmp_path):
    fake = FakeNotifier(PermanentSendError("21211 invalid To", code=21211))
    svc = make_service(tmp_path, fake)
    svc.observe([SOS], DAY)
    svc.dispatcher.run_once()
    alert = svc.alerts()[0]
    assert alert.step == 1
    assert [e.kind for e in svc.events(alert.id)].count("notification_failed") == 1
    svc.close()


def test_unknown_outcome_is_never_resent_and_goes_to_an_operator_after_the_window(tmp_path):
    clock = FakeClock()
    fake = FakeNotifier(UnknownOutcomeError("read timeout"))
    svc = make_service(tmp_path, fake, clock)
    svc.observe([SOS], DAY)
    svc.dispatcher.run_once()
    assert only_row(svc).status == "unknown"
    clock.advance(400)
    svc.tick(clock.ms)
    svc.dispatcher.run_once()   # the plan moved on to the family meanwhile; the duty line is not called again
    first = str(svc.engine.outbox.of_alert(svc.alerts()[0].id)[0].id)
    assert [n.attempt_id for n in fake.sent].count(first) == 1
    assert "operator" in {r.status for r in svc.engine.outbox.of_alert(svc.alerts()[0].id)}
    assert "needs_operator" in [e.kind for e in svc.events(svc.alerts()[0].id)]
    svc.close()


def test_a_status_callback_settles_an_unknown_outcome(tmp_path):
    svc = make_service(tmp_path, FakeNotifier(UnknownOutcomeError("timeout")))
    svc.observe([SOS], DAY)
    svc.dispatcher.run_once()
    row = only_row(svc)
    assert svc.record_delivery_status(row.id, "ringing", DAY + 100, "CA123")
    row = only_row(svc)
    assert (row.status, row.delivery, row.provider_id) == ("sent", "ringing", "CA123")
    svc.close()


def test_row_still_pending_after_a_crash_is_sent_once_after_restart(tmp_path):
    crashed = make_service(tmp_path)
    crashed.observe([SOS], DAY)      # committed, then the process dies before dispatch
    crashed.engine.db.close()
    fake = FakeNotifier()
    restarted = make_service(tmp_path, fake)
    restarted.dispatcher.recover()
    restarted.dispatcher.run_once()
    restarted.dispatcher.run_once()
    assert [n.to for n in fake.sent] == [DUTY["service_centre"]]
    restarted.close()


def test_row_left_sending_by_a_crash_is_not_resent(tmp_path):
    crashed = make_service(tmp_path)
    crashed.observe([SOS], DAY)
    row = only_row(crashed)
    assert crashed.engine.outbox.claim(row.id, DAY)   # marked, then killed mid-request
    crashed.engine.db.close()
    fake = FakeNotifier()
    restarted = make_service(tmp_path, fake)
    restarted.dispatcher.recover()
    restarted.dispatcher.run_once()
    assert fake.sent == [] and only_row(restarted).status == "unknown"
    restarted.close()


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    s = AlertSettings(retry=RetryPolicy(base_delay_s=1, max_delay_s=8, jitter=0.2))
    assert [retry_delay_s(s, n, 0.5) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert retry_delay_s(s, 1, 0.0) == 0.8 and retry_delay_s(s, 1, 0.9999) < 1.2
    assert retry_delay_s(s, 1, 0.5, retry_after_s=5) == 5


def test_started_worker_sends_as_soon_as_woken(tmp_path):
    fake = FakeNotifier()
    svc = make_service(tmp_path, fake, tick_interval_s=60)
    svc.start()
    try:
        svc.observe([SOS], DAY)
        for _ in range(500):     # bounded wait for the worker thread, no timing asserted
            if only_row(svc).status == "sent":
                break
            svc.dispatcher.wake.wait(0.01)
        assert only_row(svc).status == "sent" and len(fake.sent) == 1
    finally:
        svc.close()


def test_red_alerts_go_out_before_earlier_yellow_ones(tmp_path):
    fake = FakeNotifier()
    svc = make_service(tmp_path, fake, send_concurrency=1)
    svc.observe([msg("w1", "service_call", 1, DAY)], DAY)   # yellow: SMS to the service desk, queued first
    svc.observe([msg("w1", "sos", 2, DAY)], DAY)            # red: the duty line
    svc.dispatcher.run_once()
    assert [(n.channel, n.to) for n in fake.sent] == [("voice", DUTY["service_centre"]), ("sms", DUTY["service_desk"])]
    svc.close()


class _StuckFirstSend(FakeNotifier):
    """The first send hangs until released, as a Twilio request that takes its time."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.second_sent = threading.Event(), threading.Event()

    def send(self, notification):
        first = not self.sent
        receipt = super().send(notification)
        if first:
            self.release.wait(10)
        else:
            self.second_sent.set()
        return receipt


def test_a_slow_send_does_not_hold_up_the_next_one(tmp_path):
    fake = _StuckFirstSend()
    svc = make_service(tmp_path, fake, send_concurrency=2)
    svc.observe([msg("w1", "sos", 1, DAY)], DAY)
    svc.observe([msg("w1", "service_call", 2, DAY)], DAY)
    worker = threading.Thread(target=svc.dispatcher.run_once)
    worker.start()
    try:
        assert fake.second_sent.wait(10), "the second notification waited for the first"
    finally:
        fake.release.set()
        worker.join(10)
    assert {r.status for a in svc.alerts() for r in svc.engine.outbox.of_alert(a.id)} == {"sent"}
    svc.close()
