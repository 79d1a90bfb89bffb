"""Notifiers without a network: Twilio's answers mapped to send errors, TwiML, the dry run and the factory's choice.

The fake is a requests transport adapter mounted on the notifier's own HTTP
client, so the SDK, the URL rewrite and the error mapping all run for real.
"""
from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs

import pytest
import requests
import urllib3.exceptions
from requests.adapters import BaseAdapter

from alerts.config import AlertSettings, TwilioSettings
from alerts.notifiers.base import (
    LookupFailedError,
    Notification,
    PermanentSendError,
    ProviderRecord,
    RetryableSendError,
    UnknownOutcomeError,
)
from alerts.notifiers.dryrun import DryRunNotifier
from alerts.notifiers.factory import build_notifier
from alerts.notifiers.twilio import TWIML_MAX_CHARS, TwilioNotifier, voice_twiml

SID = "AC" + "0123456789abcdef" * 2
SMS = Notification("7", "sms", "+15555550111", "紧急：王桂兰 SOS求救 09:05", status_callback_url="https://gw.test/twilio/status/7")
CALL = Notification("8", "voice", "+15555550100", "紧急警报。王桂兰，SOS求救。", "zh-CN",
                    status_callback_url="https://gw.test/twilio/status/8", gather_action_url="https://gw.test/twilio/gather/8")


class FakeTwilio(BaseAdapter):
    """Answers each request with the next scripted (status, body, headers) or raises the scripted exception."""

    def __init__(self, *script) -> None:
        super().__init__()
        self.script = list(script)
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        status, body, headers = outcome
        r = requests.Response()
        r.status_code, r._content, r.url, r.request = status, json.dumps(body).encode(), request.url, request
        r.headers.update({"Content-Type": "application/json", **headers})
        return r

    def close(self) -> None:
        pass


def created(sid: str, status: str = "queued"):
    return 201, {"sid": sid, "status": status, "account_sid": SID}, {}


def error(status: int, code: int, headers: dict | None = None):
    return status, {"code": code, "message": f"error {code}", "more_info": "", "status": status}, headers or {}


def notifier_with(*script) -> tuple[TwilioNotifier, FakeTwilio]:
    n = TwilioNotifier(SID, "secret", "+15555550199", api_base_url="http://twilio.mock:4010")
    fake = FakeTwilio(*script)
    n.http_client.session.mount("http://", fake)
    n.http_client.session.mount("https://", fake)
    return n, fake


def form(request) -> dict[str, list[str]]:
    return parse_qs(request.body)


def refused() -> requests.ConnectionError:
    cause = urllib3.exceptions.NewConnectionError(None, "Connection refused")
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", cause))


# -- requests ----------------------------------------------------------------


def test_sms_goes_to_the_messages_resource_under_the_configured_base_url():
    n, fake = notifier_with(created("SM" + "1" * 32))
    receipt = n.send(SMS)
    [req] = fake.requests
    assert req.url == f"http://twilio.mock:4010/2010-04-01/Accounts/{SID}/Messages.json"
    assert form(req) == {"To": [SMS.to], "From": ["+15555550199"], "Body": [SMS.text],
                         "StatusCallback": [SMS.status_callback_url]}
    assert (receipt.provider_id, receipt.status) == ("SM" + "1" * 32, "queued")


def test_call_carries_the_twiml_and_asks_for_every_progress_event():
    n, fake = notifier_with(created("CA" + "2" * 32))
    assert n.send(CALL).provider_id == "CA" + "2" * 32
    [req] = fake.requests
    body = form(req)
    assert req.url.endswith(f"/Accounts/{SID}/Calls.json")
    assert body["Twiml"] == [voice_twiml(CALL.text, "zh-CN", CALL.gather_action_url)]
    assert body["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert body["StatusCallback"] == [CALL.status_callback_url]


# -- error mapping ------------------------------------------------------------


def test_http_429_is_retryable_with_the_retry_after_hint():
    n, _ = notifier_with(error(429, 20429, {"Retry-After": "7"}))
    with pytest.raises(RetryableSendError) as e:
        n.send(SMS)
    assert (e.value.code, e.value.retry_after_s) == (20429, 7.0)


def test_code_20429_is_retryable_whatever_the_status():
    n, _ = notifier_with(error(400, 20429))
    with pytest.raises(RetryableSendError) as e:
        n.send(SMS)
    assert e.value.retry_after_s is None


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_on_create_are_unknown_outcomes_twilio_may_have_acted_on(status):
    n, _ = notifier_with(error(status, 20500))
    with pytest.raises(UnknownOutcomeError):
        n.send(SMS)


@pytest.mark.parametrize("code", [21211, 21614, 21610, 21408])
def test_known_refusals_are_permanent_with_their_code(code):
    n, _ = notifier_with(error(400, code))
    with pytest.raises(PermanentSendError) as e:
        n.send(SMS)
    assert e.value.code == code


def test_any_other_client_error_is_permanent():
    n, _ = notifier_with(error(401, 20003))
    with pytest.raises(PermanentSendError) as e:
        n.send(CALL)
    assert e.value.code == 20003


def test_connection_refused_is_retryable():
    n, _ = notifier_with(refused())
    with pytest.raises(RetryableSendError):
        n.send(SMS)


def test_connect_timeout_is_retryable():
    n, _ = notifier_with(requests.ConnectTimeout("connect timed out"))
    with pytest.raises(RetryableSendError):
        n.send(SMS)


def test_read_timeout_is_an_unknown_outcome():
    n, _ = notifier_with(requests.ReadTimeout("read timed out"))
    with pytest.raises(UnknownOutcomeError):
        n.send(SMS)


def test_connection_dropped_after_sending_is_an_unknown_outcome():
    n, _ = notifier_with(requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.")))
    with pytest.raises(UnknownOutcomeError):
        n.send(CALL)


@pytest.mark.parametrize("failure", [error(429, 20429), error(503, 20500), requests.ReadTimeout("read timed out")],
                         ids=["rate_limited", "server_error", "read_timeout"])
def test_the_notifier_never_retries_by_itself(failure):
    n, fake = notifier_with(failure, created("SM" + "3" * 32))
    with pytest.raises((RetryableSendError, UnknownOutcomeError)):
        n.send(SMS)
    assert len(fake.requests) == 1


def test_an_earlier_retry_after_does_not_leak_into_a_later_failure():
    n, _ = notifier_with(error(429, 20429, {"Retry-After": "30"}), refused())
    with pytest.raises(RetryableSendError):
        n.send(SMS)
    with pytest.raises(RetryableSendError) as e:
        n.send(SMS)
    assert e.value.retry_after_s is None


# -- looking an attempt up in Twilio's lists -----------------------------------------

T0_MS = 1_795_000_000_000       # 2026-11-18 11:06:40 UTC
T0_RFC = "Wed, 18 Nov 2026 11:06:40 +0000"
EARLIER_RFC = "Wed, 18 Nov 2026 10:00:00 +0000"


def page(key: str, *records: dict) -> tuple:
    return 200, {key: list(records), "next_page_uri": None, "page": 0, "page_size": 50}, {}


def test_find_reads_messages_to_the_number_from_our_number_and_converts_them():
    record = {"sid": "SM" + "a" * 32, "to": SMS.to, "from": "+15555550199", "body": SMS.text, "status": "delivered",
              "direction": "outbound-api", "date_created": T0_RFC}
    n, fake = notifier_with(page("messages", record))
    listing = n.find(SMS, T0_MS - 60_000)
    [req] = fake.requests
    assert req.method == "GET" and req.url.split("?")[0].endswith(f"/Accounts/{SID}/Messages.json")
    assert parse_qs(req.url.split("?")[1])["To"] == [SMS.to] and parse_qs(req.url.split("?")[1])["From"] == ["+15555550199"]
    assert listing.complete and listing.records == (
        ProviderRecord("SM" + "a" * 32, SMS.to, T0_MS, "delivered", True, body=SMS.text),)


def test_find_stops_reading_at_the_first_record_older_than_asked():
    newer = {"sid": "SM" + "b" * 32, "to": SMS.to, "body": "x", "status": "sent", "direction": "outbound-api",
             "date_created": T0_RFC}
    older = {**newer, "sid": "SM" + "c" * 32, "date_created": EARLIER_RFC}
    n, _ = notifier_with(page("messages", newer, older))
    listing = n.find(SMS, T0_MS - 60_000)
    assert [r.provider_id for r in listing.records] == ["SM" + "b" * 32] and listing.complete


def test_find_reads_a_calls_status_callback_from_its_create_request_event():
    record = {"sid": "CA" + "d" * 32, "to": CALL.to, "status": "ringing", "direction": "outbound-api", "date_created": T0_RFC}
    event = {"request": {"method": "POST", "parameters": {"to": CALL.to, "status_callback": CALL.status_callback_url}}}
    n, fake = notifier_with(page("calls", record), page("events", event))
    [found] = n.find(CALL, T0_MS - 60_000).records
    assert fake.requests[1].url.split("?")[0].endswith(f"/Calls/{'CA' + 'd' * 32}/Events.json")
    assert (found.provider_id, found.status, found.status_callback_url) == ("CA" + "d" * 32, "ringing", CALL.status_callback_url)


def test_find_keeps_a_call_whose_events_cannot_be_read_without_a_callback():
    record = {"sid": "CA" + "e" * 32, "to": CALL.to, "status": "queued", "direction": "outbound-api", "date_created": T0_RFC}
    n, _ = notifier_with(page("calls", record), error(500, 20500))
    [found] = n.find(CALL, T0_MS - 60_000).records
    assert found.status_callback_url is None


@pytest.mark.parametrize("failure", [error(500, 20500), error(401, 20003), requests.ReadTimeout("read timed out"), refused()],
                         ids=["server_error", "unauthorized", "read_timeout", "refused"])
def test_a_list_request_that_fails_is_a_failed_lookup(failure):
    n, _ = notifier_with(failure)
    with pytest.raises(LookupFailedError):
        n.find(SMS, T0_MS)


def test_dry_run_finds_an_attempt_it_recorded_before_a_restart(tmp_path):
    log = tmp_path / "notifications.jsonl"
    DryRunNotifier(log, clock=lambda: T0_MS / 1000).send(CALL)
    restarted = DryRunNotifier(log)
    [found] = restarted.find(CALL, T0_MS - 60_000).records
    assert (found.provider_id, found.to, found.created_ms) == ("DRY8", CALL.to, T0_MS)
    assert restarted.find(SMS, T0_MS - 60_000).records == ()


# -- TwiML --------------------------------------------------------------------


def test_twiml_gathers_one_digit_around_the_alert_and_the_prompt():
    root = ET.fromstring(voice_twiml("紧急警报。", "zh-CN", "https://gw.test/twilio/gather/8"))
    gather = root.find("Gather")
    assert gather.attrib == {"numDigits": "1", "action": "https://gw.test/twilio/gather/8", "method": "POST"}
    says = gather.findall("Say")
    assert says[0].text == "紧急警报。" and "按1" in says[1].text
    assert {s.get("language") for s in root.iter("Say")} == {"zh-CN"}
    assert root[-1].tag == "Say"   # said once nobody pressed anything


def test_twiml_escapes_text_and_urls():
    twiml = voice_twiml('Li <"&"> fell', "en", "https://gw.test/g?a=1&b=2")
    root = ET.fromstring(twiml)
    assert root.find("Gather/Say").text == 'Li <"&"> fell'
    assert root.find("Gather").get("action") == "https://gw.test/g?a=1&b=2"


def test_twiml_cuts_the_spoken_text_not_the_tags_to_fit_twilios_limit():
    twiml = voice_twiml("危&" * 3000, "zh-CN", "https://gw.test/twilio/gather/8")
    assert len(twiml) <= TWIML_MAX_CHARS
    root = ET.fromstring(twiml)
    assert root.find("Gather/Say").text.startswith("危&危&") and len(root.findall("Gather/Say")) == 2


# -- dry run ------------------------------------------------------------------


def test_dry_run_writes_one_json_line_per_send_and_keeps_them(tmp_path):
    log = tmp_path / "var" / "notifications.jsonl"
    d = DryRunNotifier(log, clock=lambda: 1_795_000_000.0)
    assert d.send(SMS).provider_id == "DRY7" and d.send(CALL).status == "queued"
    first, second = (json.loads(line) for line in log.read_text(encoding="utf-8").splitlines())
    assert first == {"time": "2026-11-18T11:06:40.000+00:00", "attempt_id": "7", "channel": "sms", "to": SMS.to,
                     "language": "zh-CN", "text": SMS.text}
    assert second["twiml"] == voice_twiml(CALL.text, CALL.language, CALL.gather_action_url)
    assert list(d.sent) == [SMS, CALL]


def test_dry_run_without_a_log_only_keeps_them_in_memory(tmp_path):
    d = DryRunNotifier(None)
    d.send(SMS)
    assert list(d.sent) == [SMS] and list(tmp_path.iterdir()) == []


def test_the_dry_run_log_forgets_lines_older_than_its_retention(tmp_path):
    log = tmp_path / "notifications.jsonl"
    clock = [1_795_000_000.0]
    d = DryRunNotifier(log, clock=lambda: clock[0])
    d.send(SMS)
    clock[0] += 40 * 86_400
    d.send(CALL)
    assert d.prune(older_than_ms=int((clock[0] - 30 * 86_400) * 1000)) == 1
    assert [json.loads(line)["attempt_id"] for line in log.read_text(encoding="utf-8").splitlines()] == [CALL.attempt_id]
    assert d.prune(older_than_ms=int((clock[0] - 30 * 86_400) * 1000)) == 0


# -- factory ------------------------------------------------------------------


def test_factory_picks_twilio_when_the_account_is_complete(tmp_path):
    twilio = TwilioSettings(account_sid=SID, auth_token="secret", from_number="+15555550199", api_base_url="http://127.0.0.1:9")
    n = build_notifier(AlertSettings(twilio=twilio, dry_run_log=tmp_path / "n.jsonl"))
    assert isinstance(n, TwilioNotifier) and n.http_client.api_base_url == "http://127.0.0.1:9"


def test_factory_falls_back_to_a_dry_run_and_says_nothing_is_sent(tmp_path, caplog):
    twilio = TwilioSettings()   # no account at all (a partly filled one is refused by AlertSettings)
    with caplog.at_level(logging.WARNING):
        n = build_notifier(AlertSettings(twilio=twilio, dry_run_log=tmp_path / "n.jsonl"))
    assert isinstance(n, DryRunNotifier) and n.log_path == tmp_path / "n.jsonl"
    assert "NOT being sent" in caplog.text and "auth_token" in caplog.text


def test_factory_honours_dry_run_even_with_a_complete_account(tmp_path, caplog):
    twilio = TwilioSettings(account_sid=SID, auth_token="secret", from_number="+15555550199")
    with caplog.at_level(logging.WARNING):
        n = build_notifier(AlertSettings(twilio=twilio, dry_run=True, dry_run_log=tmp_path / "n.jsonl"))
    assert isinstance(n, DryRunNotifier)
    assert "alerts.dry_run = true" in caplog.text and "NOT being sent" in caplog.text


@pytest.mark.parametrize("field, value", [("account_sid", "AC123"), ("from_number", "13800138000")])
def test_twilio_settings_refuse_malformed_values(field, value):
    with pytest.raises(ValueError, match=field):
        TwilioSettings(**{field: value})


# -- Twilio's callbacks, in one place ------------------------------------------------


def test_callback_urls_are_built_from_the_routes_the_web_layer_serves():
    from alerts.notifiers.twilio import GATHER_ROUTE, STATUS_ROUTE, gather_url, status_callback_url
    from dashboards.webhooks import twilio_router

    served = {route.path for route in twilio_router(None, "token", "https://gw.example.test").routes}
    assert served == {STATUS_ROUTE, GATHER_ROUTE}
    assert status_callback_url("https://gw.example.test", 7) == "https://gw.example.test/twilio/status/7"
    assert gather_url("https://gw.example.test", 7) == "https://gw.example.test/twilio/gather/7"


@pytest.mark.parametrize("form,expected", [
    ({"MessageStatus": "Delivered", "MessageSid": "SM1"}, ("delivered", "SM1")),
    ({"SmsStatus": "sent", "SmsSid": "SM2"}, ("sent", "SM2")),
    ({"CallStatus": "no-answer", "CallSid": "CA3"}, ("no-answer", "CA3")),
    ({"CallStatus": "ringing"}, ("ringing", None)),
])
def test_a_status_callback_says_its_status_and_sid(form, expected):
    from alerts.notifiers.twilio import parse_status_callback

    callback = parse_status_callback(form)
    assert (callback.status, callback.provider_id) == expected


def test_a_callback_without_a_status_is_not_a_status_callback():
    from alerts.notifiers.twilio import parse_status_callback

    assert parse_status_callback({"MessageSid": "SM1"}) is None


@pytest.mark.parametrize("channel,current,new,forward", [
    ("sms", None, "queued", True), ("sms", "sent", "delivered", True), ("sms", "delivered", "sent", False),
    ("sms", "sent", "sent", False), ("voice", "ringing", "completed", True), ("voice", "completed", "ringing", False),
    ("voice", None, "bogus", False),
])
def test_only_a_later_delivery_status_moves_an_attempt_forward(channel, current, new, forward):
    from alerts.notifiers.twilio import moves_forward

    assert moves_forward(channel, current, new) is forward


def test_busy_no_answer_and_undelivered_reached_nobody():
    from alerts.notifiers.twilio import delivery_failed

    assert all(delivery_failed(s) for s in ("busy", "no-answer", "undelivered", "failed", "canceled"))
    assert not any(delivery_failed(s) for s in ("delivered", "completed", "ringing", None))
