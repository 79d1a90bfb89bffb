"""Twilio webhooks: signature checks, forward-only statuses, press 1 to accept; the operator API."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from dashboards.app import create_app
from tests.unit.alert_support import DAY, DUTY, FakeNotifier, make_service, msg

TOKEN = "test-auth-token-0123456789abcdef"
BASE = "https://gw.example.test"
SIGNER = RequestValidator(TOKEN)


@pytest.fixture
def svc(tmp_path):
    s = make_service(tmp_path, FakeNotifier())
    s.observe([msg("w1", "sos", 1, DAY, lat=31.2, lon=121.4)], DAY)
    s.dispatcher.run_once()
    yield s
    s.close()


@pytest.fixture
def client(svc):
    return TestClient(create_app(svc, twilio_auth_token=TOKEN, public_base_url=BASE, api_token="op-secret"))


def attempt(svc):
    return svc.engine.outbox.of_alert(svc.alerts()[0].id)[0]


def post_signed(client, path, form, token=TOKEN):
    sig = RequestValidator(token).compute_signature(BASE + path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": sig})


def test_signed_status_callback_moves_the_attempt_forward(client, svc):
    row = attempt(svc)
    r = post_signed(client, f"/twilio/status/{row.id}", {"CallSid": "CA1", "CallStatus": "ringing"})
    assert r.status_code == 204
    assert attempt(svc).delivery == "ringing"


@pytest.mark.parametrize("headers", [{}, {"X-Twilio-Signature": "Zm9yZ2Vk"}])
def test_unsigned_or_forged_callback_is_refused_and_changes_nothing(client, svc, headers):
    row = attempt(svc)
    r = client.post(f"/twilio/status/{row.id}", data={"CallSid": "CA1", "CallStatus": "failed"}, headers=headers)
    assert r.status_code == 403
    assert attempt(svc).delivery == "queued" and svc.alerts()[0].step == 0


def test_callback_signed_with_another_token_is_refused(client, svc):
    row = attempt(svc)
    r = post_signed(client, f"/twilio/status/{row.id}", {"CallStatus": "completed"}, token="someone-else")
    assert r.status_code == 403 and attempt(svc).delivery == "queued"


def test_late_and_repeated_callbacks_never_move_status_backwards(client, svc):
    row = attempt(svc)
    for status in ("in-progress", "ringing", "completed", "initiated", "completed"):
        assert post_signed(client, f"/twilio/status/{row.id}", {"CallStatus": status}).status_code == 204
    assert attempt(svc).delivery == "completed"


def test_failed_call_status_moves_the_plan_on(client, svc):
    row = attempt(svc)
    post_signed(client, f"/twilio/status/{row.id}", {"CallStatus": "no-answer"})
    assert svc.alerts()[0].step == 1


def test_gather_with_1_acknowledges_and_stops_escalation(client, svc):
    row = attempt(svc)
    r = post_signed(client, f"/twilio/gather/{row.id}", {"Digits": "1", "CallSid": "CA1"})
    assert r.status_code == 200 and "<Say" in r.text and "谢谢" in r.text
    alert = svc.alerts()[0]
    assert (alert.state, alert.escalation) == ("acknowledged", "stopped")
    ack = [e for e in svc.events(alert.id) if e.kind == "acknowledged"]
    assert ack[0].actor == DUTY["service_centre"]
    svc.tick(DAY + 3_600_000)
    assert svc.alerts()[0].step == 0


def test_gather_with_another_digit_repeats_the_prompt(client, svc):
    row = attempt(svc)
    r = post_signed(client, f"/twilio/gather/{row.id}", {"Digits": "7"})
    assert r.status_code == 200 and "<Gather" in r.text and f"/twilio/gather/{row.id}" in r.text
    assert svc.alerts()[0].state == "open"


def test_forged_gather_does_not_acknowledge(client, svc):
    row = attempt(svc)
    r = client.post(f"/twilio/gather/{row.id}", data={"Digits": "1"}, headers={"X-Twilio-Signature": "AAAA"})
    assert r.status_code == 403 and svc.alerts()[0].state == "open"


def test_operator_api_needs_the_bearer_token(client):
    assert client.get("/api/alerts?state=open").status_code == 401
    assert client.get("/api/alerts", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_operator_lists_acknowledges_and_resolves(client, svc):
    auth = {"Authorization": "Bearer op-secret"}
    [a] = client.get("/api/alerts?state=open", headers=auth).json()
    assert a["alert_type"] == "sos"
    assert client.post(f"/api/alerts/{a['id']}/ack", json={"actor": "Chen"}, headers=auth).json()["state"] == "acknowledged"
    assert client.post(f"/api/alerts/{a['id']}/ack", json={"actor": "Chen"}, headers=auth).status_code == 409
    assert client.post(f"/api/alerts/{a['id']}/resolve", json={"actor": "Chen"}, headers=auth).json()["state"] == "resolved"
    assert client.get("/api/alerts?state=open", headers=auth).json() == []
    assert client.post("/api/alerts/999/ack", json={"actor": "Chen"}, headers=auth).status_code == 404
