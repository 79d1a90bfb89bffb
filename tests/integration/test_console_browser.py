"""The operator console in a real Chromium: a watch's SOS through Mosquitto and the gateway process appears
in two operators' browsers without a reload, one acknowledges and the other sees it, the detail page shows
the track and the notifications, and the queue survives a restart of the server.

Waits are generous (a loaded CI machine is slow); how fast the console really is lives in
bench/console_latency.py, not here.
"""
from __future__ import annotations

import time

from playwright.sync_api import expect

from dashboards.accounts import AccountStore, Role
from devtools.localservices import free_port
from tests.fixtures.browser import log_in
from tests.fixtures.gateway_proc import Publisher, register

PASSWORD = "night shift password"
WAIT_MS = 15_000
WATCHES = ("watch-0001", "watch-0002")   # worn by Wang Guilan and Li Jianguo in examples/community.toml


def _start(gateway_process, mosquitto, tmp_path, **web):
    web_port = free_port()
    accounts = AccountStore(tmp_path / "web.db")
    for name in ("chen", "lin"):
        accounts.create_account(name, PASSWORD, Role.OPERATOR, int(time.time() * 1000))
    accounts.close()
    gateway = gateway_process({"web": {"enabled": True, "port": web_port, "db_path": str(tmp_path / "web.db"), **web},
                               "alerts": {"tick_interval_s": 0.2}})
    register(gateway.store, *WATCHES)
    gateway.start()
    return gateway, f"http://127.0.0.1:{web_port}"


def _walk_then_sos(mosquitto, watch: str, minutes: int = 40) -> None:
    """A walk north-east over the last `minutes`, one fix a minute, then an SOS where it ends."""
    pub = Publisher(mosquitto, mosquitto.add_device(watch), client_id=watch)
    now = int(time.time() * 1000)
    lat, lon = 31.2290, 121.4720
    for i in range(minutes):
        lat, lon = lat + 0.00012, lon + 0.00009
        pub.publish(f"eldercare/watch/{watch}/location", {"ts": now - (minutes - i) * 60_000, "seq": i + 1, "lat": lat,
                                                          "lon": lon, "accuracy_m": 8.0, "source": "gps"})
    pub.publish(f"eldercare/watch/{watch}/status", {"ts": now - 30_000, "seq": 500, "battery": 64, "worn": True})
    pub.publish(f"eldercare/watch/{watch}/sos", {"ts": now, "seq": 501, "lat": lat, "lon": lon, "accuracy_m": 8.0})
    pub.wait_all()
    pub.close()


def _card(page, resident: str):
    return page.locator("li.card", has_text=f"SOS pressed — {resident}")


def test_two_operators_see_an_sos_live_and_each_others_acknowledgement(gateway_process, mosquitto, chromium, tmp_path):
    _, base = _start(gateway_process, mosquitto, tmp_path)
    chen_ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    lin_ctx = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)   # a phone
    chen, lin = log_in(chen_ctx, base, "chen", PASSWORD), log_in(lin_ctx, base, "lin", PASSWORD)
    expect(chen.locator(".empty")).to_be_visible()
    lin.get_by_role("button", name="Enable sound for red alerts").click()   # browsers need a click first
    expect(lin.locator("#sound")).to_have_attribute("aria-pressed", "true")
    assert lin.evaluate("window.beeps") == 1   # the click plays it once, so the operator knows it works

    _walk_then_sos(mosquitto, WATCHES[0])
    for page in (chen, lin):
        card = _card(page, "Wang Guilan")
        expect(card).to_be_visible(timeout=WAIT_MS)
        expect(card.locator(".badge")).to_have_text("RED")
        expect(card.locator(".countdown")).to_contain_text("ack due in")
        assert page.evaluate("window.notReloaded") is True
    lin.wait_for_function("window.beeps === 2", timeout=WAIT_MS)   # the new red alert sounded
    assert chen.evaluate("window.beeps") is None                    # and not where sound was never enabled

    _card(chen, "Wang Guilan").get_by_role("button", name="Acknowledge").click()
    expect(_card(lin, "Wang Guilan").locator(".state")).to_have_text("acknowledged by chen", timeout=WAIT_MS)
    assert lin.evaluate("window.notReloaded") is True

    chen.click("a.title")
    expect(chen.locator("h1")).to_contain_text("SOS pressed — Wang Guilan")
    expect(chen.locator(".map svg polyline.track-before")).to_have_count(1)
    expect(chen.locator(".map svg .marker-alert")).to_have_count(1)
    expect(chen.locator(".map svg .fence")).to_have_count(1)
    expect(chen.locator("table.attempts")).to_contain_text("+15555550100")      # the duty line was called
    expect(chen.locator("table.attempts .attempt-state").first).to_have_text("sent")
    expect(chen.locator("section.panel", has_text="Device watch-0001")).to_contain_text("64 %")
    expect(chen.locator("section.panel", has_text="Resident")).to_contain_text("Building 3, Room 402")
    expect(chen.locator("table.events")).to_contain_text("acknowledged")

    lin_page = _card(lin, "Wang Guilan")
    lin_page.locator("input[name=note]").fill("Called her daughter; a neighbour is with her")
    lin_page.get_by_role("button", name="Resolve").click()
    expect(lin.locator(".empty")).to_be_visible(timeout=WAIT_MS)
    expect(chen.locator("table.events")).to_contain_text("Called her daughter", timeout=WAIT_MS)   # the open detail page too

    # "Where has Mrs Wang been in the last hour?": the devices page, then her track.
    chen.get_by_role("link", name="Devices").click()
    expect(chen.locator("table.fleet")).to_contain_text("Wang Guilan")
    expect(chen.locator("#live-status")).to_be_hidden()   # a page with no live parts claims no live connection
    chen.locator("tr", has_text="Wang Guilan").get_by_role("link", name="Track").click()
    expect(chen.locator(".map svg polyline")).not_to_have_count(0)
    expect(chen.locator("p.hint")).to_contain_text("40 positions")
    chen_ctx.close()
    lin_ctx.close()


def test_the_queue_survives_a_server_restart_and_an_open_page_catches_up_by_itself(
        gateway_process, mosquitto, chromium, tmp_path):
    gateway, base = _start(gateway_process, mosquitto, tmp_path)
    ctx = chromium.new_context()
    page = log_in(ctx, base, "chen", PASSWORD)
    _walk_then_sos(mosquitto, WATCHES[0], minutes=3)
    expect(_card(page, "Wang Guilan")).to_be_visible(timeout=WAIT_MS)

    gateway.kill9()
    expect(page.locator("#live-status")).to_have_class("live-status off", timeout=WAIT_MS)
    gateway.start()
    _walk_then_sos(mosquitto, WATCHES[1], minutes=3)   # while the page was away or just after
    expect(_card(page, "Li Jianguo")).to_be_visible(timeout=WAIT_MS)
    expect(_card(page, "Wang Guilan")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True

    fresh = ctx.new_page()   # and a page opened now reads the same queue from the store
    fresh.goto(f"{base}/console")
    expect(fresh.locator("li.card")).to_have_count(2)
    ctx.close()


def test_a_long_queue_shows_its_head_counts_the_rest_and_moves_up_as_alerts_are_resolved(
        gateway_process, mosquitto, chromium, tmp_path):
    _, base = _start(gateway_process, mosquitto, tmp_path, queue_page_size=1)
    ctx = chromium.new_context()
    page = log_in(ctx, base, "chen", PASSWORD)
    _walk_then_sos(mosquitto, WATCHES[0], minutes=2)
    expect(_card(page, "Wang Guilan")).to_be_visible(timeout=WAIT_MS)
    _walk_then_sos(mosquitto, WATCHES[1], minutes=2)   # a newer red alert: it belongs below the page
    expect(page.locator("p.more")).to_contain_text("And 1 more open alert below these", timeout=WAIT_MS)
    expect(page.locator("li.card")).to_have_count(1)

    first = _card(page, "Wang Guilan")
    first.locator("input[name=note]").fill("False alarm, she is fine")
    first.get_by_role("button", name="Resolve").click()
    expect(_card(page, "Li Jianguo")).to_be_visible(timeout=WAIT_MS)   # the next one moved up
    expect(page.locator("p.more")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
    ctx.close()
