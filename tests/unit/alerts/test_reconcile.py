"""Telling our attempt apart in Twilio's list of calls and messages: the matching rule alone, no network."""
from __future__ import annotations

from alerts.notifiers.base import ProviderListing, ProviderRecord
from alerts.outbox import OutboxRow
from alerts.reconcile import CLOCK_MARGIN_MS, Attempt, CannotTell, Found, NoRecord, verdict

TO = "+15555550111"
T0 = 1_795_000_000_000          # when the attempt's row fell due
NOW = T0 + 15_000               # when Twilio is asked
TEXT = "紧急：王桂兰 SOS求救 09:05"
CALLBACK = "https://gw.test/twilio/status/7"
SMS = Attempt("sms", TO, TEXT, CALLBACK, T0, NOW)
CALL = Attempt("voice", TO, "紧急警报。", CALLBACK, T0, NOW)


def message(sid: str = "SM1", *, to: str = TO, at: int | None = T0 + 1000, body: str = TEXT, outbound: bool = True):
    return ProviderRecord(sid, to, at, "delivered", outbound, body=body)


def call(sid: str = "CA1", *, at: int | None = T0 + 1000, callback: str | None = None):
    return ProviderRecord(sid, TO, at, "ringing", True, status_callback_url=callback)


def listing(*records: ProviderRecord, complete: bool = True) -> ProviderListing:
    return ProviderListing(records, complete)


def attempt_row(id_: int, status: str, provider_id: str | None = None, text: str = TEXT) -> OutboxRow:
    return OutboxRow(id_, 1, "0", TO, "sms", "zh-CN", text, status, 1, T0, provider_id, None, None)


def test_a_message_with_our_number_body_and_time_is_ours():
    assert verdict(SMS, listing(message()), []) == Found(message())


def test_an_empty_listing_means_twilio_has_no_record():
    assert verdict(SMS, listing(), []) == NoRecord()


def test_a_message_with_another_body_is_not_ours():
    assert verdict(SMS, listing(message(body="another alert's text")), []) == NoRecord()


def test_a_message_to_another_number_or_received_is_not_ours():
    assert verdict(SMS, listing(message(to="+15555550112"), message("SM2", outbound=False)), []) == NoRecord()


def test_records_outside_the_window_are_not_ours_but_clock_skew_within_the_margin_is_tolerated():
    before = message(at=T0 - CLOCK_MARGIN_MS - 1000)
    after = message("SM2", at=NOW + CLOCK_MARGIN_MS + 1000)
    assert verdict(SMS, listing(before, after), []) == NoRecord()
    skewed = message(at=T0 - CLOCK_MARGIN_MS + 1000)
    assert verdict(SMS, listing(skewed), []) == Found(skewed)


def test_a_record_without_a_creation_time_stays_a_candidate():
    assert verdict(SMS, listing(message(at=None)), []) == Found(message(at=None))


def test_a_record_another_attempt_already_holds_is_not_ours():
    assert verdict(SMS, listing(message()), [attempt_row(8, "sent", provider_id="SM1")]) == NoRecord()


def test_two_candidates_mean_twilio_cannot_tell():
    assert isinstance(verdict(SMS, listing(message("SM1"), message("SM2")), []), CannotTell)


def test_one_candidate_with_another_unsettled_attempt_of_the_same_text_cannot_tell():
    assert isinstance(verdict(SMS, listing(message()), [attempt_row(8, "unknown")]), CannotTell)
    assert isinstance(verdict(SMS, listing(message()), [attempt_row(8, "sending")]), CannotTell)


def test_unsettled_attempts_with_another_text_or_already_settled_are_no_rivals():
    others = [attempt_row(8, "unknown", text="another alert's text"), attempt_row(9, "sent", provider_id="SM9"),
              attempt_row(10, "failed")]
    assert verdict(SMS, listing(message()), others) == Found(message())


def test_a_listing_cut_short_cannot_tell_even_when_empty():
    assert isinstance(verdict(SMS, listing(complete=False), []), CannotTell)


def test_a_calls_status_callback_decides_among_several():
    ours = call("CA2", callback=CALLBACK)
    found = verdict(CALL, listing(call("CA1", callback="https://gw.test/twilio/status/99"), ours, call("CA3")), [])
    assert found == Found(ours)


def test_a_call_showing_another_attempts_callback_is_not_ours():
    assert verdict(CALL, listing(call(callback="https://gw.test/twilio/status/99")), []) == NoRecord()


def test_a_call_without_a_shown_callback_is_matched_on_number_and_time_alone():
    assert verdict(CALL, listing(call()), []) == Found(call())
    assert isinstance(verdict(CALL, listing(call("CA1"), call("CA2")), []), CannotTell)
