"""The community usage page in a real Chromium: an admin opens it from the nav, reads the heatmap of sessions
committed through the gateway's operational store, sees the machine in trouble linked to its alert, and
downloads the CSV. The README's screenshot of it is taken here (`UPDATE_SCREENSHOTS=1`)."""
from __future__ import annotations

import csv
import random
import time
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from dashboards.accounts import AccountStore, Role
from devtools.localservices import free_port
from gateway.models import DeviceKind, EquipmentType
from tests.fixtures.browser import log_in, screenshot
from tests.fixtures.gateway_proc import register
from tests.unit.exercise_support import exercise

PASSWORD = "centre admin password"
WAIT_MS = 15_000
ZONE = ZoneInfo("Asia/Shanghai")   # the gateway's default community zone
# Machines of examples/community.toml, and one registered later that the file does not name yet.
MACHINES = (("rower-01", EquipmentType.ROWER), ("walker-01", EquipmentType.WALKER),
            ("twister-02", EquipmentType.WAIST_TWISTER))
RESIDENTS = ("r-001", "r-002", "r-003", None, None)   # most sessions are never claimed


def _four_weeks_of_sessions(store) -> list[int]:
    """Mornings and early evenings, busier at weekends, over the 27 days before today; returns the starts."""
    rng = random.Random(13)
    today = datetime.now(ZONE).date()
    starts = []
    for back in range(27, 0, -1):
        day = today - timedelta(days=back)
        for n in range(rng.randint(3, 5) + (3 if day.weekday() >= 5 else 0)):
            hour = rng.choice((6, 7, 7, 8, 8, 9, 10, 15, 17, 18, 18, 19))
            start = datetime(day.year, day.month, day.day, hour, rng.randrange(0, 50), tzinfo=ZONE)
            device_id, kind = MACHINES[0] if back < 6 and n == 0 else rng.choice(MACHINES[:2])
            if back == 6 and n == 0:
                device_id, kind = MACHINES[2]   # its last session: idle since
            ms = int(start.timestamp() * 1000)
            exercise(store, device_id, f"s{back}-{n}", ms, minutes=rng.randint(8, 25), resident_id=rng.choice(RESIDENTS),
                     equipment_type=kind)
            starts.append(ms)
    return starts


def test_an_admin_reads_the_usage_heatmap_and_downloads_the_csv(gateway_process, chromium, tmp_path):
    web_port = free_port()
    accounts = AccountStore(tmp_path / "web.db")
    accounts.create_account("lin", PASSWORD, Role.ADMIN, int(time.time() * 1000))
    accounts.close()
    gateway = gateway_process({"web": {"enabled": True, "port": web_port, "db_path": str(tmp_path / "web.db")},
                               # the elliptical, registered and never heard from, is reported silent at once
                               "alerts": {"tick_interval_s": 0.2, "restart_grace_s": 0, "equipment_silent_s": 1}})
    register(gateway.store, "elliptical-01", kind=DeviceKind.EQUIPMENT)
    starts = _four_weeks_of_sessions(gateway.store)
    gateway.start()
    base = f"http://127.0.0.1:{web_port}"

    ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = log_in(ctx, base, "lin", PASSWORD)
    silent_card = page.locator("li.card", has_text="silent").locator("a.title")
    expect(silent_card).to_be_visible(timeout=WAIT_MS)   # raised a tick after the gateway started
    alert_href = silent_card.get_attribute("href")
    page.get_by_role("link", name="Usage").click()
    expect(page.locator("h1")).to_have_text("Community usage")

    cells = page.locator("svg.heatmap rect.cell")
    expect(cells).to_have_count(7 * 24)
    busiest, count = Counter((datetime.fromtimestamp(ms / 1000, ZONE).strftime("%a"),
                              datetime.fromtimestamp(ms / 1000, ZONE).hour) for ms in starts).most_common(1)[0]
    cell = page.locator(f'svg.heatmap rect[data-day="{busiest[0]}"][data-hour="{busiest[1]}"]')
    expect(cell).to_have_attribute("data-count", str(count))
    expect(cell).to_have_class("cell l4")   # the darkest shade
    expect(cell.locator("title")).to_have_text(f"{busiest[0]} {busiest[1]:02d}:00-{busiest[1] + 1:02d}:00: {count} sessions")
    expect(page.locator("svg.heatmap rect.l0").first).to_be_visible()   # hours nobody exercises
    expect(page.locator("table.machines")).to_contain_text("Rower by the east gate")
    expect(page.locator("table.idle")).to_contain_text("twister-02")
    expect(page.locator("table.idle tr", has_text="Elliptical in the park's fitness corner")).to_contain_text("never used")

    silent = page.locator("table.troubles a", has_text="Elliptical in the park's fitness corner")
    expect(silent).to_have_attribute("href", alert_href)
    screenshot(page, "usage.png", tmp_path)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV (4 weeks)").click()
    assert download.value.suggested_filename.startswith("usage-")
    text = download.value.path().read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == len(starts)
    assert {r["machine"] for r in rows} == {"Rower by the east gate", "Walker in Mrs Wang's courtyard", "twister-02"}
    assert all(r["start"].endswith("+08:00") for r in rows)
    ctx.close()

    phone = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    small = log_in(phone, base, "lin", PASSWORD)
    small.goto(f"{base}/usage")
    expect(small.locator("svg.heatmap")).to_be_visible()
    # The page fits the phone's width; only the heatmap's own panel scrolls sideways.
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    phone.close()

