"""The Twilio notifier against Twilio's own API description (Prism behind a recording proxy).

Prism checks what the spec can (auth header present, AccountSid shape,
required fields, form encoding); the recorded request shows the rest. Then the
real engine and dispatcher meet Twilio's rate limit and its invalid-number
refusal, with an injected clock instead of waiting out retry delays.
"""
from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from alerts.config import AlertSettings
from alerts.notifiers.base import LookupFailedError, Notification, PermanentSendError, RetryableSendError
from alerts.notifiers.twilio import TwilioNotifier
from alerts.service import build_alert_service
from devtools.localservices import free_port
from tests.unit.alert_support import DAY, FakeClock, msg

SID = "AC" + "5f" * 16
TOKEN = "contract-test-token"
FROM = "+15555550199"
REPO = Path(__file__).resolve().parents[2]
SMS = Notification("41", "sms", "+15555550111", "紧急：王桂兰 SOS求救 09:05", "zh-CN",
                   status_callback_url="https://gw.example.test/twilio/status/41")
CALL = Notification("42", "voice", "+15555550100", "紧急警报。王桂兰，SOS求救。", "zh-CN",
                    status_callback_url="https://gw.example.test/twilio/status/42",
                    gather_action_url="https://gw.example.test/twilio/gather/42")


@pytest.fixture
def notifier(twilio_standin) -> TwilioNotifier:
    return TwilioNotifier(SID, TOKEN, FROM, api_base_url=twilio_standin.base_url, timeout_s=10)


def basic_auth(sid: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()


# -- requests as Twilio documents them -----------------------------------------


def test_sms_is_a_form_post_to_messages_with_basic_auth(twilio_standin, notifier):
    receipt = notifier.send(SMS)
    [req] = twilio_standin.wait_for(1)
    assert (req.method, req.path) == ("POST", f"/2010-04-01/Accounts/{SID}/Messages.json")
    assert req.headers["Authorization"] == basic_auth(SID, TOKEN)
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert (req.field("To"), req.field("From"), req.field("Body")) == (SMS.to, FROM, SMS.text)
    assert req.field("StatusCallback") == SMS.status_callback_url
    assert receipt.provider_id.startswith("SM")


def test_call_is_a_form_post_to_calls_with_inline_twiml(twilio_standin, notifier):
    receipt = notifier.send(CALL)
    [req] = twilio_standin.wait_for(1)
    assert (req.method, req.path) == ("POST", f"/2010-04-01/Accounts/{SID}/Calls.json")
    assert req.headers["Authorization"] == basic_auth(SID, TOKEN)
    assert (req.field("To"), req.field("From")) == (CALL.to, FROM)
    assert req.field("StatusCallback") == CALL.status_callback_url
    assert req.form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert receipt.provider_id.startswith("CA")


def test_call_twiml_gathers_one_digit_and_speaks_mandarin(twilio_standin, notifier):
    notifier.send(CALL)
    [req] = twilio_standin.wait_for(1)
    root = ET.fromstring(req.field("Twiml"))
    gather = root.find("Gather")
    assert (root.tag, gather.get("numDigits"), gather.get("action")) == ("Response", "1", CALL.gather_action_url)
    assert gather.find("Say").text == CALL.text
    assert {say.get("language") for say in root.iter("Say")} == {"zh-CN"}


# -- Twilio's refusals -----------------------------------------------------------


def test_rate_limit_is_retryable(twilio_standin, notifier):
    twilio_standin.force("code=429")
    with pytest.raises(RetryableSendError) as e:
        notifier.send(SMS)
    assert e.value.code == 20429


@pytest.mark.parametrize("prefer, notification, code", [
    ("code=400, example=invalid_to", SMS, 21211),
    ("code=400, example=unsubscribed", CALL, 21610),
], ids=["invalid_to", "unsubscribed"])
def test_refusals_for_the_recipient_are_permanent_with_twilios_code(twilio_standin, notifier, prefer, notification, code):
    twilio_standin.force(prefer)
    with pytest.raises(PermanentSendError) as e:
        notifier.send(notification)
    assert e.value.code == code


def test_forced_errors_apply_only_to_the_next_request(twilio_standin, notifier):
    twilio_standin.force("code=429")
    with pytest.raises(RetryableSendError):
        notifier.send(SMS)
    assert notifier.send(SMS).provider_id.startswith("SM")


# -- looking an attempt up ---------------------------------------------------------


@pytest.mark.parametrize("notification, resource", [(SMS, "Messages"), (CALL, "Calls")], ids=["sms", "call"])
def test_find_lists_by_recipient_and_sender_and_holds_nothing_of_ours_in_the_spec_example(
        twilio_standin, notifier, notification, resource):
    listing = notifier.find(notification, DAY - 60_000)
    [req] = twilio_standin.wait_for(1)
    assert req.method == "GET" and req.path.split("?")[0] == f"/2010-04-01/Accounts/{SID}/{resource}.json"
    assert f"To=%2B{notification.to[1:]}" in req.path and f"From=%2B{FROM[1:]}" in req.path
    assert req.headers["Authorization"] == basic_auth(SID, TOKEN)
    assert listing.records == () and listing.complete   # the spec's examples are from 2019, long before the attempt


@pytest.mark.parametrize("status, code", [(429, 20429), (503, 20503)], ids=["rate_limited", "unavailable"])
def test_a_list_twilio_answers_with_an_error_is_a_failed_lookup(twilio_standin, notifier, status, code):
    twilio_standin.answer("/Messages.json", {"code": code, "message": "error", "more_info": "", "status": status}, status=status)
    with pytest.raises(LookupFailedError, match=f"HTTP {status}"):
        notifier.find(SMS, DAY)


def test_nothing_listening_is_retryable():
    closed = TwilioNotifier(SID, TOKEN, FROM, api_base_url=f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(RetryableSendError):
        closed.send(SMS)


# -- through the engine and the dispatcher ------------------------------------------


@pytest.fixture
def service(tmp_path, notifier):
    settings = AlertSettings(db_path=tmp_path / "alerts.db", community_file=REPO / "examples" / "community.toml",
                             public_base_url="https://gw.example.test")
    clock = FakeClock(DAY)
    svc = build_alert_service(settings, notifier, clock)
    yield svc
    svc.close()


def sos(svc) -> None:
    svc.observe([msg("watch-0001", "sos", 1, DAY, lat=31.2304, lon=121.4737)], DAY)


def test_a_rate_limited_call_is_retried_later_and_ends_sent(twilio_standin, service):
    twilio_standin.force("code=429")
    sos(service)
    service.dispatcher.run_once()
    [row] = service.engine.outbox.of_alert(service.alerts()[0].id)
    assert (row.status, row.attempts) == ("pending", 1)
    service.clock.advance(service.settings.retry.max_delay_s)   # past any backoff, jitter included
    service.dispatcher.run_once()
    [row] = service.engine.outbox.of_alert(service.alerts()[0].id)
    assert (row.status, row.attempts) == ("sent", 2) and row.provider_id.startswith("CA")
    calls = [r for r in twilio_standin.wait_for(2) if r.path.endswith("/Calls.json")]
    assert [r.prefer for r in calls] == ["code=429", None]


def test_an_invalid_number_fails_the_row_and_moves_the_plan_to_the_family(twilio_standin, service):
    twilio_standin.force("code=400, example=invalid_to")
    sos(service)
    service.dispatcher.run_once()
    alert = service.alerts()[0]
    rows = service.engine.outbox.of_alert(alert.id)
    [first] = [r for r in rows if r.step == "0"]
    assert first.status == "failed" and "21211" in first.last_error
    assert alert.step == 1
    assert sorted((r.channel, r.recipient) for r in rows if r.step == "1") == [("sms", "+15555550111"), ("sms", "+15555550112")]
    service.dispatcher.run_once()
    texted = sorted(r.field("To") for r in twilio_standin.wait_for(3) if r.path.endswith("/Messages.json"))
    assert texted == ["+15555550111", "+15555550112"]
