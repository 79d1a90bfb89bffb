"""Claiming an exercise session the way a resident does, in a real Chromium on a phone-sized screen,
against the gateway process: the machine hears its code on `cmd`, the link opens the claim page, a
texted code proves the phone, the session lands in her record; a second claim, an expired code and
1,000 guesses over HTTP are refused."""
from __future__ import annotations

import json
import re
import time

import httpx
from playwright.sync_api import expect

from devtools.localservices import free_port
from gateway.models import DeviceKind, EquipmentType
from tests.fixtures.browser import screenshot
from tests.fixtures.gateway_proc import Publisher, register, wait_until
from tests.integration.test_exercise_sessions import machine_display, session_stream
from tests.unit.exercise_support import exercise, workout

MACHINE = "rower-01"          # "Rower by the east gate" in examples/community.toml
WANG_PHONE = "+15555550201"   # Wang Guilan's own mobile there
WAIT_MS = 15_000


def texted_code(log, phone: str) -> str:
    texts = [json.loads(line)["text"] for line in log.read_text(encoding="utf-8").splitlines()
             if json.loads(line)["to"] == phone]
    return re.search(r"\b(\d{6})\b", texts[-1])[1]


def test_a_resident_claims_her_session_on_her_phone_and_nobody_can_claim_it_again(gateway_process, mosquitto,
                                                                                   chromium, tmp_path):
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    gateway = gateway_process({"web": {"enabled": True, "port": web_port, "db_path": str(tmp_path / "web.db")},
                               "alerts": {"public_base_url": base}})
    register(gateway.store, MACHINE, kind=DeviceKind.EQUIPMENT)
    device = mosquitto.add_device(MACHINE)
    display, heard = machine_display(mosquitto, device, MACHINE)
    gateway.start()
    # Earlier weeks of her record, and one session whose claim window closed long ago.
    now = int(time.time() * 1000)
    for week in range(1, 6):
        at = now - week * 7 * 86_400_000 + 3_600_000
        exercise(gateway.store, "walker-01", f"w-{week}", at, minutes=10 + 4 * week, resident_id="r-001",
                 equipment_type=EquipmentType.WALKER)
        if week % 2:
            exercise(gateway.store, "elliptical-01", f"e-{week}", at + 86_400_000, minutes=8, resident_id="r-001",
                     equipment_type=EquipmentType.ELLIPTICAL)
    old = gateway.store.commit_batch(workout(MACHINE, "s-old", now - 4_000_000, minutes=5), [], now - 3_600_000)

    pub = Publisher(mosquitto, device, client_id=MACHINE)
    for stream_name, body in session_stream("s-0042", now - 700_000, 600, first_seq=100):
        pub.publish(f"eldercare/equipment/{MACHINE}/{stream_name}", body)
    pub.wait_all()
    pub.close()
    wait_until(lambda: any(n["state"] == "closed" for n in heard), 30, "the machine to show its claim code")
    notice = next(n for n in heard if n["state"] == "closed")
    assert notice["url"].startswith(f"{base}/c/")

    phone = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.new_page()
    page.goto(notice["url"])              # what scanning the QR code on the machine's screen does
    expect(page.locator("h1")).to_have_text("Your session", timeout=WAIT_MS)
    expect(page.locator(".facts")).to_contain_text("Rower by the east gate")
    expect(page.locator(".facts")).to_contain_text("Strokes300")   # 600 s, a stroke every 2 s
    page.fill("#phone", "+1 555 555 0201")   # typed with spaces, as people do
    page.click("text=Text me a code")
    expect(page.locator(".message")).to_contain_text("We sent a 6-digit code", timeout=WAIT_MS)
    page.fill("#otp", texted_code(tmp_path / "notifications.jsonl", WANG_PHONE))
    page.click("text=Add to my record")
    page.wait_for_url(re.compile(r"/me/"), timeout=WAIT_MS)
    expect(page.locator("h1")).to_have_text("Wang Guilan's exercise")
    expect(page.locator("#added")).to_be_visible()
    expect(page.locator(".session.just-added")).to_contain_text("Rower by the east gate")
    expect(page.locator(".sessions .session")).to_have_count(9)
    assert page.locator("figure.chart svg rect").count() >= 5    # a bar in each week she exercised
    screenshot(page, "exercise-record.png", tmp_path)
    record_url = page.url.split("?")[0]
    # Her link came by SMS after this first claim.
    log = (tmp_path / "notifications.jsonl").read_text(encoding="utf-8")
    assert record_url.removeprefix(base) in log

    # The same code again: refused, with the reason, on her phone and on anyone else's.
    page.goto(notice["url"])
    expect(page.locator("h1")).to_have_text("This session is in your record")
    other = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
    response = other.goto(notice["url"])
    assert response.status == 409
    expect(other.locator("h1")).to_have_text("This session is already in a record")
    expect(other.locator("#phone")).to_have_count(0)
    # An expired code is refused too.
    expired = other.goto(f"{base}/c/{old[0].claim_code}")
    assert expired.status == 410
    expect(other.locator("h1")).to_have_text("This code has expired")
    # The claim page's QR image (for a machine without a QR renderer of its own).
    qr = httpx.get(f"{notice['url']}/qr.svg", timeout=10)
    assert qr.status_code == 200 and qr.text.lstrip().startswith(("<?xml", "<svg"))

    # 1,000 guesses from one client: every one refused, and after the first ten without even looking.
    with httpx.Client(base_url=base, timeout=10) as guesser:
        answers = [guesser.get(f"/c/{n:010d}").status_code for n in range(1000)]
    assert set(answers[:10]) == {404} and set(answers[10:]) == {429}
    assert gateway.store.session_by_code(old[0].claim_code).resident_id is None
    display.loop_stop()
    display.disconnect()
    phone.close()
    gateway.stop()
