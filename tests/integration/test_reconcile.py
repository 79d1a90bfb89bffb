"""Unknown outcomes reconciled with Twilio's own records, through the real notifier and the Prism stand-in.

A create that Twilio answers with a 5xx (after Prism accepted it) or a send cut
off by a crash leaves the outcome unknown. The dispatcher then reads Twilio's
Calls or Messages list. Prism answers a list with the spec's example, which
holds nothing of ours: that is the "no record" branch. For the "Twilio has it"
branch the stand-in answers the list with the spec's example record changed to
ours, built here from the spec file at run time.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from alerts.config import AlertSettings
from alerts.notifiers.twilio import TwilioNotifier
from alerts.service import build_alert_service
from tests.fixtures.twilio_standin import find_spec
from tests.unit.alert_support import DAY, FakeClock, msg

SID = "AC" + "3c" * 16
FROM = "+15555550199"
DUTY_LINE = "+15555550100"
REPO = Path(__file__).resolve().parents[2]
CALL_SID = "CA" + "d1" * 16
SERVER_ERROR = {"code": 20500, "message": "Internal Server Error", "more_info": "https://www.twilio.com/docs/errors/20500",
                "status": 500}


@pytest.fixture
def service(tmp_path, twilio_standin):
    settings = AlertSettings(db_path=tmp_path / "alerts.db", community_file=REPO / "examples" / "community.toml",
                             public_base_url="https://gw.example.test", reconcile_after_s=5, reconcile_tries=3)
    notifier = TwilioNotifier(SID, "reconcile-test-token", FROM, api_base_url=twilio_standin.base_url, timeout_s=10)
    svc = build_alert_service(settings, notifier, FakeClock(DAY))
    yield svc
    svc.close()


def list_example(resource: str) -> dict:
    """The first example Twilio's spec gives for listing `resource` ("Calls" or "Messages")."""
    spec = json.loads(find_spec().read_text(encoding="utf-8"))
    get = spec["paths"][f"/2010-04-01/Accounts/{{AccountSid}}/{resource}.json"]["get"]
    return next(iter(get["responses"]["200"]["content"]["application/json"]["examples"].values()))["value"]


def rfc2822(ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(ms / 1000, UTC))


def call_list(*calls: dict) -> dict:
    """A Calls list page of the spec's example shape holding `calls`, each over the example's first record."""
    page = list_example("Calls")
    return {**page, "calls": [{**page["calls"][0], **c} for c in calls], "next_page_uri": None}


def our_call(sid: str, created_ms: int, status: str = "ringing", to: str = DUTY_LINE) -> dict:
    return {"sid": sid, "to": to, "from": FROM, "direction": "outbound-api", "status": status,
            "date_created": rfc2822(created_ms), "start_time": None, "end_time": None, "parent_call_sid": None}


def creates(standin, resource: str):
    return [r for r in standin.requests if r.method == "POST" and r.path.endswith(f"/{resource}.json")]


def lists(standin, resource: str):
    return [r for r in standin.requests if r.method == "GET" and r.path.split("?")[0].endswith(f"/{resource}.json")]


def sos_whose_call_gets_a_server_error(standin, svc) -> int:
    """An SOS; Prism creates its call but Twilio's answer is a 500. Returns the attempt's row id."""
    standin.answer("/Calls.json", SERVER_ERROR, status=500, method="POST", times=1)
    svc.observe([msg("watch-0001", "sos", 1, DAY, lat=31.2304, lon=121.4737)], DAY)
    svc.dispatcher.run_once()
    [row] = svc.engine.outbox.of_alert(svc.alerts()[0].id)
    assert row.status == "unknown" and "500" in row.last_error
    return row.id


def row(svc, attempt_id):
    return svc.engine.outbox.get(attempt_id)


def test_a_server_error_on_create_is_not_resent_before_twilio_is_asked(twilio_standin, service):
    attempt_id = sos_whose_call_gets_a_server_error(twilio_standin, service)
    service.dispatcher.run_once()    # too soon to ask: Twilio's list may not show a call created a moment ago
    assert len(creates(twilio_standin, "Calls")) == 1 and lists(twilio_standin, "Calls") == []
    assert row(service, attempt_id).status == "unknown"


def test_call_twilio_has_no_record_of_is_resent_exactly_once(twilio_standin, service):
    attempt_id = sos_whose_call_gets_a_server_error(twilio_standin, service)
    service.clock.advance(service.settings.reconcile_after_s)
    service.dispatcher.run_once()
    service.dispatcher.run_once()
    [asked] = lists(twilio_standin, "Calls")
    assert "To=%2B15555550100" in asked.path and "From=%2B15555550199" in asked.path
    first, again = creates(twilio_standin, "Calls")
    assert again.field("To") == DUTY_LINE and again.field("StatusCallback") == first.field("StatusCallback")
    assert twilio_standin.requests.index(asked) < twilio_standin.requests.index(again)
    r = row(service, attempt_id)
    assert (r.status, r.attempts) == ("sent", 2) and r.provider_id.startswith("CA")
    kinds = [e.kind for e in service.events(service.alerts()[0].id)]
    assert kinds.count("notification_resend") == 1 and "needs_operator" not in kinds


def test_call_twilio_has_a_record_of_is_recorded_not_resent(twilio_standin, service):
    attempt_id = sos_whose_call_gets_a_server_error(twilio_standin, service)
    twilio_standin.answer("/Calls.json", call_list(our_call(CALL_SID, DAY, status="ringing")))
    service.clock.advance(service.settings.reconcile_after_s)
    service.dispatcher.run_once()
    service.dispatcher.run_once()
    assert len(creates(twilio_standin, "Calls")) == 1 and len(lists(twilio_standin, "Calls")) == 1
    r = row(service, attempt_id)
    assert (r.status, r.provider_id, r.delivery) == ("sent", CALL_SID, "ringing")
    assert "notification_reconciled" in [e.kind for e in service.events(service.alerts()[0].id)]


def test_the_status_callback_in_a_calls_events_picks_our_call_among_several(twilio_standin, service):
    attempt_id = sos_whose_call_gets_a_server_error(twilio_standin, service)
    other_sid = "CA" + "e2" * 16
    twilio_standin.answer("/Calls.json", call_list(our_call(other_sid, DAY + 1000), our_call(CALL_SID, DAY)))
    for sid, url in ((other_sid, "https://gw.example.test/twilio/status/999"),
                     (CALL_SID, f"https://gw.example.test/twilio/status/{attempt_id}")):
        page = {"events": [{"request": {"method": "POST", "url": "https://api.twilio.com/2010-04-01/Accounts/x/Calls.json",
                                        "parameters": {"to": DUTY_LINE, "status_callback": url}}, "response": {}}],
                "next_page_uri": None, "page": 0, "page_size": 50}
        twilio_standin.answer(f"/Calls/{sid}/Events.json", page)
    service.clock.advance(service.settings.reconcile_after_s)
    service.dispatcher.run_once()
    assert len(creates(twilio_standin, "Calls")) == 1
    assert (row(service, attempt_id).status, row(service, attempt_id).provider_id) == ("sent", CALL_SID)


def test_sms_twilio_has_a_record_of_is_recorded_not_resent(twilio_standin, service):
    twilio_standin.answer("/Messages.json", SERVER_ERROR, status=500, method="POST", times=1)
    service.observe([msg("watch-0002", "service_call", 1, DAY)], DAY)   # yellow: an SMS to the service desk
    service.dispatcher.run_once()
    [attempt] = service.engine.outbox.of_alert(service.alerts()[0].id)
    assert attempt.status == "unknown"
    page = list_example("Messages")
    ours = {**page["messages"][0], "sid": "SM" + "a7" * 16, "to": attempt.recipient, "from": FROM, "body": attempt.text,
            "direction": "outbound-api", "status": "delivered", "date_created": rfc2822(DAY), "date_sent": rfc2822(DAY)}
    same_number_other_text = {**ours, "sid": "SM" + "b8" * 16, "body": "an earlier, different message"}
    twilio_standin.answer("/Messages.json", {**page, "messages": [ours, same_number_other_text], "next_page_uri": None})
    service.clock.advance(service.settings.reconcile_after_s)
    service.dispatcher.run_once()
    assert len(creates(twilio_standin, "Messages")) == 1
    r = row(service, attempt.id)
    assert (r.status, r.provider_id, r.delivery) == ("sent", "SM" + "a7" * 16, "delivered")


def test_send_cut_off_by_a_crash_is_resent_once_when_twilio_has_no_record(twilio_standin, service):
    service.observe([msg("watch-0001", "sos", 1, DAY)], DAY)
    [attempt] = service.engine.outbox.of_alert(service.alerts()[0].id)
    assert service.engine.outbox.claim(attempt.id, DAY)   # marked sending, then the process died mid-request
    service.dispatcher.recover()
    assert row(service, attempt.id).status == "unknown"
    service.clock.advance(service.settings.reconcile_after_s)
    service.dispatcher.run_once()
    service.dispatcher.run_once()
    assert len(lists(twilio_standin, "Calls")) == 1 and len(creates(twilio_standin, "Calls")) == 1
    assert row(service, attempt.id).status == "sent"


def test_operator_is_asked_on_the_live_stream_only_when_twilio_cannot_be_read(twilio_standin, service):
    heard = []
    service.listeners.append(heard.append)
    attempt_id = sos_whose_call_gets_a_server_error(twilio_standin, service)
    twilio_standin.answer("/Calls.json", SERVER_ERROR, status=500)          # every list request fails
    for _ in range(service.settings.reconcile_tries):
        service.clock.advance(service.settings.retry.max_delay_s)       # past each lookup's backoff
        service.dispatcher.run_once()
    assert len(lists(twilio_standin, "Calls")) == service.settings.reconcile_tries
    assert len(creates(twilio_standin, "Calls")) == 1
    assert row(service, attempt_id).status == "operator"
    [asked] = [e for e in heard if e.kind == "needs_operator"]
    assert asked.alert_id == service.alerts()[0].id and "could not be read" in asked.detail
    assert [e.kind for e in service.events(asked.alert_id)].count("needs_operator") == 1
