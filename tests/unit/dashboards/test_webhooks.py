"""Twilio webhooks: signature checks, forward-only statuses, press 1 to accept; the JSON API with a named token."""
from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from dashboards.accounts import Role
from tests.unit.alert_support import DAY, DUTY
from tests.unit.dashboards.web_support import BASE, make_web
from tests.unit.dashboards.web_support import TWILIO_TOKEN as TOKEN

# Past SQLite's signed 64-bit integers, not positive, or just large: each must be a 4xx, never a 500.
HOSTILE_IDS = [str(2**63), str(2**64 + 1), "-1", "0", "x" * 10_240, "9" * 10_240]
SIGNER = RequestValidator(TOKEN)


@pytest.fixture
def web(svc, tmp_path):
    client, accounts, devices = make_web(svc, tmp_path, operators=(), admins=())
    yield client, accounts
    accounts.close()
    devices.close()


@pytest.fixture
def client(web):
    return web[0]


@pytest.fixture
def auth(web) -> dict[str, str]:
    """The Authorization header of a named API token, as an integrator sends it."""
    return {"Authorization": "Bearer " + web[1].create_token("integration", Role.OPERATOR, "test", DAY)}


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


def test_the_api_needs_a_live_token(client):
    assert client.get("/api/alerts?state=open").status_code == 401
    assert client.get("/api/alerts", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_operator_lists_acknowledges_and_resolves(client, svc, auth):
    [a] = client.get("/api/alerts?state=open", headers=auth).json()
    assert a["alert_type"] == "sos"
    assert client.post(f"/api/alerts/{a['id']}/ack", headers=auth).json()["state"] == "acknowledged"
    assert client.post(f"/api/alerts/{a['id']}/ack", headers=auth).status_code == 409
    assert client.post(f"/api/alerts/{a['id']}/resolve", json={"note": "ok"}, headers=auth).json()["state"] == "resolved"
    assert client.get("/api/alerts?state=open", headers=auth).json() == []
    assert client.post("/api/alerts/999/ack", headers=auth).status_code == 404


# -- hostile input: a 4xx, never a 500 -------------------------------------------------------------


@pytest.mark.parametrize("route", ["status", "gather"])
@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=lambda v: v[:20])
def test_a_signed_twilio_webhook_with_an_impossible_attempt_id_is_refused_with_422(client, svc, route, bad_id):
    r = post_signed(client, f"/twilio/{route}/{bad_id}", {"CallSid": "CA1", "CallStatus": "failed", "Digits": "1"})
    assert r.status_code == 422
    assert attempt(svc).delivery == "queued" and svc.alerts()[0].state == "open"


@pytest.mark.parametrize("route", ["status", "gather"])
@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=lambda v: v[:20])
def test_an_unsigned_twilio_webhook_with_an_impossible_attempt_id_is_refused_with_403(client, route, bad_id):
    assert client.post(f"/twilio/{route}/{bad_id}", data={"CallStatus": "failed"}).status_code == 403


def test_a_signed_status_callback_with_a_10_kb_status_is_not_a_server_error(client, svc):
    row = attempt(svc)
    r = post_signed(client, f"/twilio/status/{row.id}", {"CallSid": "CA1", "CallStatus": "x" * 10_240})
    assert 200 <= r.status_code < 500


@pytest.mark.parametrize("method, path", [("GET", "/api/alerts/{}/events"), ("POST", "/api/alerts/{}/ack"),
                                          ("POST", "/api/alerts/{}/resolve")])
@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=lambda v: v[:20])
def test_an_operator_route_with_an_impossible_alert_id_is_refused_with_422(client, svc, method, path, bad_id, auth):
    r = client.request(method, path.format(bad_id), json={"note": "ok"}, headers=auth)
    assert r.status_code == 422
    assert svc.alerts()[0].state == "open"


@pytest.mark.parametrize("method, path", [("GET", "/api/alerts/{}/events"), ("POST", "/api/alerts/{}/ack")])
@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=lambda v: v[:20])
def test_an_operator_route_with_an_impossible_alert_id_and_no_token_is_refused_with_401(client, method, path, bad_id):
    assert client.request(method, path.format(bad_id), json={"note": "ok"}).status_code == 401


@pytest.mark.parametrize("state", ["closed", "x" * 10_240, "-1"])
def test_an_unknown_state_filter_is_refused_with_422(client, state, auth):
    assert client.get("/api/alerts", params={"state": state}, headers=auth).status_code == 422


def test_the_largest_possible_alert_id_is_simply_not_found(client, auth):
    r = client.post(f"/api/alerts/{2**63 - 1}/ack", headers=auth)
    assert r.status_code == 404


def test_a_resolution_note_of_10_kb_is_refused_with_422(client, svc, auth):
    a = svc.alerts()[0]
    assert client.post(f"/api/alerts/{a.id}/resolve", json={"note": "x" * 10_240}, headers=auth).status_code == 422
    assert svc.alerts()[0].state == "open"
