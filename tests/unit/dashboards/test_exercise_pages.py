"""Claiming an exercise session and the personal record, through the web app over real stores: a QR
link or typed code, a one-time SMS code, single use, expiry, throttled guessing, the record link."""
from __future__ import annotations

import re
import time

import pytest

from dashboards.exercise import COOKIE
from gateway.models import DeviceKind, DeviceMessage, EquipmentSession, EquipmentTelemetry, EquipmentType
from tests.unit.alert_support import COMMUNITY, FakeNotifier, make_service
from tests.unit.dashboards.web_support import BASE, make_web

WANG_PHONE = "+8613800138000"
LI_PHONE = "+8613900139000"
RESIDENTS = [
    {**COMMUNITY["residents"][0], "phone": WANG_PHONE},
    {"id": "r-2", "name": "Li Jianguo", "age": 77, "phone": LI_PHONE},
]


def now_ms() -> int:
    return int(time.time() * 1000)


def workout(device: str, sid: str, t0: int, seconds: int = 120, end: bool = True) -> list[DeviceMessage]:
    def eq(payload) -> DeviceMessage:
        return DeviceMessage(device, DeviceKind.EQUIPMENT, payload)
    out = [eq(EquipmentSession(ts=t0, seq=1, event="start", session_id=sid, equipment_type=EquipmentType.ROWER))]
    out += [eq(EquipmentTelemetry(ts=t0 + s * 1000, seq=s + 1, session_id=sid, elapsed_s=s, count=s // 3,
                                  distance_m=s // 3 * 5.0, energy_kcal=round(s * 0.1, 2), heart_rate=100, power_w=50))
            for s in range(1, seconds + 1)]
    if end:
        out.append(eq(EquipmentSession(ts=t0 + seconds * 1000, seq=seconds + 2, event="end", session_id=sid,
                                       equipment_type=EquipmentType.ROWER, elapsed_s=seconds, count=seconds // 3)))
    return out


@pytest.fixture
def parts(tmp_path):
    notifier = FakeNotifier()
    svc = make_service(tmp_path, notifier, community={**COMMUNITY, "residents": RESIDENTS})
    client, accounts, devices = make_web(svc, tmp_path)
    yield client, devices, notifier, svc
    accounts.close()
    devices.close()
    svc.close()


def session_code(devices, sid: str = "s1", end: bool = True, closed_ago_ms: int = 0) -> str:
    t = now_ms() - closed_ago_ms
    news = devices.commit_batch(workout("rower-01", sid, t - 200_000, end=end), [], t)
    return news[0].claim_code


def texted_code(notifier) -> str:
    return re.search(r"\b(\d{6})\b", notifier.sent[-1].text)[1]


def claim_by_sms(client, notifier, code: str, phone: str = "138 0013 8000"):
    page = client.post(f"/c/{code}/phone", data={"phone": phone})
    assert page.status_code == 200, page.text
    assert notifier.sent[-1].to == WANG_PHONE and notifier.sent[-1].channel == "sms"
    return client.post(f"/c/{code}/verify", data={"phone": WANG_PHONE, "otp": texted_code(notifier)},
                       follow_redirects=False)


def test_a_resident_claims_a_session_with_a_texted_code_and_lands_on_their_record(parts):
    client, devices, notifier, _ = parts
    code = session_code(devices)
    page = client.get(f"/c/{code}")
    assert page.status_code == 200 and "Rower" in page.text and "40" in page.text   # 120 s, 40 strokes
    done = claim_by_sms(client, notifier, code)
    assert done.status_code == 303 and done.headers["location"].startswith("/me/")
    key = done.headers["location"].split("/me/")[1].split("?")[0]
    assert client.cookies.get(COOKIE) == key
    # The first claim brings the record link by SMS, to the resident's own phone.
    assert notifier.sent[-1].to == WANG_PHONE and f"{BASE}/me/{key}" in notifier.sent[-1].text
    record = client.get(done.headers["location"])
    assert record.status_code == 200 and "Wang Guilan" in record.text and "just-added" in record.text
    assert [s.resident_id for s in devices.sessions_of("r-1")] == ["r-1"]


def test_a_code_works_once(parts):
    client, devices, notifier, _ = parts
    code = session_code(devices)
    assert claim_by_sms(client, notifier, code).status_code == 303
    client.cookies.clear()
    again = client.get(f"/c/{code}")
    assert again.status_code == 409 and "already in a record" in again.text
    assert client.post(f"/c/{code}/phone", data={"phone": LI_PHONE}).status_code == 409


def test_an_expired_code_is_refused_with_the_reason(parts):
    client, devices, _, _ = parts
    code = session_code(devices, closed_ago_ms=11 * 60_000)   # the default claim window is 10 minutes
    page = client.get(f"/c/{code}")
    assert page.status_code == 410 and "expired" in page.text
    assert client.post(f"/c/{code}/phone", data={"phone": WANG_PHONE}).status_code == 410


def test_a_code_can_be_typed_as_read_out(parts):
    client, devices, _, _ = parts
    code = session_code(devices)
    typed = f"{code[:5].lower()} {code[5:]}"
    page = client.get("/c", params={"code": typed})
    assert page.status_code == 200 and "Text me a code" in page.text


def test_guesses_are_refused_and_then_throttled(parts):
    client, devices, _, _ = parts
    real = session_code(devices)
    statuses = [client.get(f"/c/{'0' * 9}{n % 10}").status_code for n in range(1000)]
    assert set(statuses[:10]) == {404} and set(statuses[10:]) == {429}
    throttled = client.get(f"/c/{real}")   # the real code too, from the guessing client
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert devices.session_by_code(real).resident_id is None


def test_a_wrong_texted_code_is_refused_and_a_phone_not_on_file_is_told_so(parts):
    client, devices, notifier, _ = parts
    code = session_code(devices)
    unknown = client.post(f"/c/{code}/phone", data={"phone": "+8613700000000"})
    assert unknown.status_code == 400 and "not registered" in unknown.text
    client.post(f"/c/{code}/phone", data={"phone": WANG_PHONE})
    wrong = "000000" if texted_code(notifier) != "000000" else "111111"
    refused = client.post(f"/c/{code}/verify", data={"phone": WANG_PHONE, "otp": wrong})
    assert refused.status_code == 400 and "not right" in refused.text
    assert devices.session_by_code(code).resident_id is None


def test_the_next_claim_on_the_same_phone_is_one_tap_and_sends_no_sms(parts):
    client, devices, notifier, _ = parts
    claim_by_sms(client, notifier, session_code(devices, "s1"))
    sent = len(notifier.sent)
    code = session_code(devices, "s2")
    page = client.get(f"/c/{code}")
    assert "Add to Wang Guilan&#39;s record" in page.text or "Add to Wang Guilan's record" in page.text
    done = client.post(f"/c/{code}/mine", follow_redirects=False)
    assert done.status_code == 303 and len(notifier.sent) == sent
    assert sorted(s.session_id for s in devices.sessions_of("r-1")) == ["s1", "s2"]


def test_a_claim_during_the_workout_tells_the_rules_whose_limits_apply(parts):
    client, devices, notifier, svc = parts
    t = now_ms()
    messages = workout("rower-01", "s9", t - 60_000, seconds=30, end=False)
    svc.observe(messages, t)
    code = devices.commit_batch(messages, [], t)[0].claim_code
    claim_by_sms(client, notifier, code)
    assert svc.engine.detection.equipment["rower-01"].claimed_by == "r-1"


def test_a_record_link_shows_one_resident_and_stops_when_revoked(parts, tmp_path):
    client, devices, notifier, _ = parts
    done = claim_by_sms(client, notifier, session_code(devices))
    key = done.headers["location"].split("/me/")[1].split("?")[0]
    client.cookies.clear()
    page = client.get(f"/me/{key}")
    assert page.status_code == 200 and "Wang Guilan" in page.text and "Li Jianguo" not in page.text
    assert "<svg" in page.text and "Minutes of exercise per week" in page.text
    from dashboards.record_links import RecordLinks
    links = RecordLinks(tmp_path / "web.db")
    assert links.revoke("r-1", now_ms()) == 1
    links.close()
    gone = client.get(f"/me/{key}")
    assert gone.status_code == 404 and "does not work" in gone.text


def test_the_qr_image_carries_the_claim_link(parts):
    client, devices, _, _ = parts
    code = session_code(devices)
    qr = client.get(f"/c/{code}/qr.svg")
    assert qr.status_code == 200 and qr.headers["content-type"].startswith("image/svg+xml") and b"<svg" in qr.content
    assert client.get("/c/ZZZZZZZZZZ/qr.svg").status_code == 404
