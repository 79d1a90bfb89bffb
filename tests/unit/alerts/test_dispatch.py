"""The dispatch worker: order and slots, retries, failures, unknown outcomes, reconciliation and crash recovery."""
from __future__ import annotations

import threading

import pytest

from alerts.config import AlertSettings, RetryPolicy
from alerts.dispatch import retry_delay_s
from alerts.notifiers.base import (
    LookupFailedError,
    PermanentSendError,
    ProviderListing,
    ProviderRecord,
    RetryableSendError,
    UnknownOutcomeError,
)
from tests.unit.alert_support import COMMUNITY, DAY, DUTY, FakeClock, FakeNotifier, make_service, msg

# Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_backend")

SOS = msg("w1", "sos", 1, DAY, lat=31.2, lon=121.4)


def pause() -> None:
    """A short real wait while polling a worker thread (bounded by the caller's loop; nothing is timed)."""
    threading.Event().wait(0.01)


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
    fake = FakeNotifier(*[RetryableSendError("429 too many")] * 2)
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


def test_unknown_outcome_a_notifier_cannot_look_up_is_never_resent_and_goes_to_an_operator_after_the_window(tmp_path):
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


def test_row_left_sending_by_a_crash_is_not_resent_by_a_notifier_that_cannot_look_it_up(tmp_path):
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
            pause()
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


# -- slots: one is always free for red -------------------------------------------------------


def community_of(n: int) -> dict:
    """The test community with `n` residents, wearing watches w0..w{n-1}."""
    [template] = COMMUNITY["residents"]
    residents = [{**template, "id": f"r-{i}", "watch_device_id": f"w{i}"} for i in range(n)]
    return {**COMMUNITY, "residents": residents, "equipment": []}


class _HangingSms(FakeNotifier):
    """Every SMS hangs until released, as Twilio answering slowly; calls are answered at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.sms_hanging, self.call_sent = threading.Event(), threading.Event(), threading.Event()
        self.sent_when_called: list[str] = []

    def send(self, notification):
        receipt = super().send(notification)
        if notification.channel == "sms":
            self.sms_hanging.set()
            self.release.wait(10)
        else:
            self.sent_when_called = [n.channel for n in self.sent]
            self.call_sent.set()
        return receipt


def test_a_red_call_takes_the_slot_kept_free_while_other_sends_hang(tmp_path):
    fake = _HangingSms()
    svc = make_service(tmp_path, fake, community=community_of(2), send_concurrency=2)
    svc.start()
    try:
        svc.observe([msg("w0", "service_call", 1, DAY), msg("w1", "service_call", 1, DAY)], DAY)   # two yellow SMS
        assert fake.sms_hanging.wait(10)
        svc.observe([msg("w0", "sos", 2, DAY)], DAY)
        assert fake.call_sent.wait(10), "the SOS call waited for the hanging SMS"
        # Yellow rows held one slot of two: the second SMS waited, the call did not.
        assert fake.sent_when_called == ["sms", "voice"]
        fake.release.set()
        for _ in range(500):     # bounded wait for the waiting SMS, no timing asserted
            if len(fake.sent) == 3:
                break
            pause()
        assert sorted(n.channel for n in fake.sent) == ["sms", "sms", "voice"]
    finally:
        fake.release.set()
        svc.close()


def test_each_row_is_sent_once_however_often_the_worker_is_woken(tmp_path):
    fake = FakeNotifier()
    svc = make_service(tmp_path, fake, community=community_of(6), send_concurrency=3)
    svc.start()
    try:
        svc.observe([msg(f"w{i}", "service_call", 1, DAY) for i in range(6)], DAY)
        for _ in range(500):     # bounded wait for the worker thread, no timing asserted
            svc.dispatcher.wake.set()
            if len(fake.sent) >= 6 and all(r.status == "sent" for a in svc.alerts() for r in svc.engine.outbox.of_alert(a.id)):
                break
            pause()
    finally:
        svc.close()
    ids = [n.attempt_id for n in fake.sent]
    assert len(ids) == 6 and len(set(ids)) == 6


# -- unknown outcomes are reconciled with the provider's records ----------------------------------


class _FindingNotifier(FakeNotifier):
    """A fake that can also be asked for its records: `lookups` scripts each answer (a listing or an exception)."""

    def __init__(self, *script, lookups=()) -> None:
        super().__init__(*script)
        self.lookups = list(lookups)
        self.asked: list[tuple[str, int]] = []

    def find(self, notification, since_ms):
        self.asked.append((notification.attempt_id, since_ms))
        answer = self.lookups.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def listing(*records):
    return ProviderListing(tuple(records), True)


def call_record(sid: str, at: int = DAY + 500, status: str = "ringing"):
    return ProviderRecord(sid, DUTY["service_centre"], at, status, True)


def unknown_sos(tmp_path, fake, **over):
    clock = FakeClock()
    svc = make_service(tmp_path, fake, clock, **over)
    heard = []
    svc.listeners.append(heard.append)
    svc.observe([SOS], DAY)
    svc.dispatcher.run_once()
    assert only_row(svc).status == "unknown"
    return svc, clock, heard


def test_an_unknown_outcome_is_not_looked_up_before_the_pause(tmp_path):
    fake = _FindingNotifier(UnknownOutcomeError("read timeout"), lookups=[listing()])
    svc, clock, _ = unknown_sos(tmp_path, fake)
    clock.advance(svc.settings.reconcile_after_s - 1)
    svc.dispatcher.run_once()
    assert fake.asked == [] and len(fake.sent) == 1
    svc.close()


def test_an_unknown_outcome_twilio_has_no_record_of_is_resent_once(tmp_path):
    fake = _FindingNotifier(UnknownOutcomeError("read timeout"), lookups=[listing()])
    svc, clock, heard = unknown_sos(tmp_path, fake)
    clock.advance(svc.settings.reconcile_after_s)
    svc.dispatcher.run_once()
    svc.dispatcher.run_once()
    row = only_row(svc)
    assert fake.asked == [(str(row.id), DAY - 30_000)]       # back to when the row fell due, less the clock margin
    assert [n.attempt_id for n in fake.sent] == [str(row.id)] * 2
    assert (row.status, row.attempts) == ("sent", 2)
    assert "needs_operator" not in [e.kind for e in heard]
    svc.close()


def test_an_unknown_outcome_twilio_has_a_record_of_is_recorded_and_not_resent(tmp_path):
    fake = _FindingNotifier(UnknownOutcomeError("HTTP 502"), lookups=[listing(call_record("CA" + "9" * 32))])
    svc, clock, heard = unknown_sos(tmp_path, fake)
    clock.advance(svc.settings.reconcile_after_s)
    svc.dispatcher.run_once()
    svc.dispatcher.run_once()
    row = only_row(svc)
    assert len(fake.sent) == 1
    assert (row.status, row.provider_id, row.delivery) == ("sent", "CA" + "9" * 32, "ringing")
    assert {"notification_reconciled", "delivery_status"} <= {e.kind for e in heard}
    svc.close()


def test_an_ambiguous_answer_goes_to_an_operator_on_the_live_stream_at_once(tmp_path):
    fake = _FindingNotifier(UnknownOutcomeError("read timeout"),
                            lookups=[listing(call_record("CA" + "1" * 32), call_record("CA" + "2" * 32))])
    svc, clock, heard = unknown_sos(tmp_path, fake)
    clock.advance(svc.settings.reconcile_after_s)
    svc.dispatcher.run_once()
    assert len(fake.sent) == 1 and only_row(svc).status == "operator"
    [asked] = [e for e in heard if e.kind == "needs_operator"]
    assert "2 voice records" in asked.detail and DUTY["service_centre"] in asked.detail
    svc.close()


def test_operator_is_asked_once_only_after_every_lookup_failed(tmp_path):
    tries = 3
    fake = _FindingNotifier(UnknownOutcomeError("read timeout"), lookups=[LookupFailedError("list timed out")] * tries)
    svc, clock, heard = unknown_sos(tmp_path, fake, reconcile_tries=tries)
    for n in range(1, tries + 1):
        clock.advance(svc.settings.retry.max_delay_s)   # past the lookup's backoff
        svc.dispatcher.run_once()
        assert len(fake.asked) == n
        assert only_row(svc).status == ("operator" if n == tries else "unknown")
    svc.dispatcher.run_once()
    assert len(fake.asked) == tries and len(fake.sent) == 1
    assert [e.kind for e in heard].count("needs_operator") == 1
    svc.close()


def test_a_failed_lookup_is_tried_again_only_after_a_backoff(tmp_path):
    fake = _FindingNotifier(UnknownOutcomeError("read timeout"), lookups=[LookupFailedError("list timed out"), listing()])
    svc, clock, _ = unknown_sos(tmp_path, fake)
    clock.advance(svc.settings.reconcile_after_s)
    svc.dispatcher.run_once()
    svc.dispatcher.run_once()
    assert len(fake.asked) == 1                       # the clock did not move: no second request yet
    clock.advance(svc.settings.retry.base_delay_s * 2)
    svc.dispatcher.run_once()
    assert len(fake.asked) == 2 and len(fake.sent) == 2 and only_row(svc).status == "sent"
    svc.close()


def test_a_status_callback_before_the_lookup_settles_it_without_asking(tmp_path):
    fake = _FindingNotifier(UnknownOutcomeError("read timeout"), lookups=[listing()])
    svc, clock, _ = unknown_sos(tmp_path, fake)
    assert svc.record_delivery_status(only_row(svc).id, "ringing", clock.ms, "CA" + "4" * 32)
    clock.advance(svc.settings.reconcile_after_s)
    svc.dispatcher.run_once()
    assert fake.asked == [] and len(fake.sent) == 1 and only_row(svc).status == "sent"
    svc.close()


def test_no_record_for_an_alert_accepted_meanwhile_is_not_sent(tmp_path):
    fake = _FindingNotifier(UnknownOutcomeError("read timeout"), lookups=[listing()])
    svc, clock, _ = unknown_sos(tmp_path, fake)
    svc.acknowledge(svc.alerts()[0].id, "operator Chen", clock.ms)
    clock.advance(svc.settings.reconcile_after_s)
    svc.dispatcher.run_once()
    assert len(fake.asked) == 1 and len(fake.sent) == 1
    assert only_row(svc).status == "cancelled"
    svc.close()


def test_row_left_sending_by_a_crash_is_looked_up_and_recorded_when_twilio_has_it(tmp_path):
    crashed = make_service(tmp_path)
    crashed.observe([SOS], DAY)
    row = only_row(crashed)
    assert crashed.engine.outbox.claim(row.id, DAY)   # marked, then killed mid-request
    crashed.engine.db.close()
    clock = FakeClock()
    fake = _FindingNotifier(lookups=[listing(call_record("CA" + "5" * 32))])
    restarted = make_service(tmp_path, fake, clock)
    restarted.dispatcher.recover()
    clock.advance(restarted.settings.reconcile_after_s)
    restarted.dispatcher.run_once()
    assert fake.sent == [] and (only_row(restarted).status, only_row(restarted).provider_id) == ("sent", "CA" + "5" * 32)
    restarted.close()


# -- a press's call starts from the thread that judged it, and telemetry steps aside meanwhile ------


def test_a_running_service_starts_a_press_call_from_the_observing_thread(tmp_path):
    svc = make_service(tmp_path, FakeNotifier(), tick_interval_s=60)
    # Running: the dispatch thread's first round (which looks at the rows as it starts) is over.
    looked = threading.Event()
    until_next_due = svc.dispatcher._until_next_due

    def after_a_round(looked_at_ms):
        looked.set()
        return until_next_due(looked_at_ms)

    svc.dispatcher._until_next_due = after_a_round
    svc.start()
    assert looked.wait(10)
    submitted_by: list[str] = []
    submit = svc.dispatcher._submit

    def spy(kind, row, red):
        submitted_by.append(threading.current_thread().name)
        submit(kind, row, red)

    svc.dispatcher._submit = spy
    try:
        svc.observe([SOS], DAY)
        assert submitted_by == [threading.current_thread().name]   # not the dispatch thread's, after a wake-up
    finally:
        svc.close()


def test_a_red_send_holds_priority_until_it_has_gone_out(tmp_path):
    fake = _StuckFirstSend()
    svc = make_service(tmp_path, fake, tick_interval_s=60)
    svc.start()
    priority = svc.dispatcher.priority
    try:
        svc.observe([SOS], DAY)
        for _ in range(500):     # bounded wait for the send job to reach the notifier
            if fake.sent:
                break
            pause()
        assert fake.sent and priority.urgent()   # the call is under way: telemetry waits
        fake.release.set()
        for _ in range(500):
            if not priority.urgent():
                break
            pause()
        assert not priority.urgent() and only_row(svc).status == "sent"
    finally:
        fake.release.set()
        svc.close()
