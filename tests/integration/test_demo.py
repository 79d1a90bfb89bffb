"""The README's demo command works: the whole stack plays a scenario and reports what it raised."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections import defaultdict

import httpx
import pytest

from alerts.config import AlertSettings
from alerts.directory import parse_community
from alerts.fences import distance_outside_m
from devtools.demo import OPERATIONS_TOKEN
from tests.fixtures.gateway_proc import REPO

COMMUNITY = tomllib.loads((REPO / "examples" / "community.toml").read_text(encoding="utf-8"))
DUTY_LINE, MAINTENANCE = COMMUNITY["duty"]["service_centre"], COMMUNITY["duty"]["maintenance"]


def _demo(work, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "devtools.demo", "--speed", "0", "--workdir", str(work), *args],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_the_demo_raises_the_scripted_alerts_and_records_what_it_would_send(tmp_path):
    work = tmp_path / "demo"
    run = _demo(work)
    alerts = [line.split() for line in run.stdout.split("== Alerts ==")[1].split("==")[0].splitlines() if line.strip()]
    raised = {(a[0], a[1]) for a in alerts if a[0] in ("red", "orange", "yellow")}
    assert {("red", "sos"), ("red", "fall"), ("yellow", "service_call"), ("orange", "overexertion")} <= raised
    sent = [json.loads(line) for line in (work / "notifications.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(n["channel"] == "voice" and n["to"] == DUTY_LINE for n in sent), sent  # the duty line is called
    assert "bad_json" in run.stdout.split("== Dead letters")[1]
    # Mrs Wang claimed her rowing with her phone and the texted code; her record link came by SMS.
    [claim] = [json.loads(line) for line in (work / "operations.jsonl").read_text().splitlines()
               if json.loads(line)["action"] == "claim"]
    assert claim["claimed"] and claim["resident"] == "r-001"
    key = claim["record"].rsplit("/me/", 1)[1]
    wang = next(r for r in COMMUNITY["residents"] if r["id"] == "r-001")
    assert any(n["to"] == wang["phone"] and f"/me/{key}" in n["text"] for n in sent)
    claimed = _read_only(work / "gateway.db").execute(
        "SELECT device_id, closed_by FROM exercise_session WHERE resident_id = 'r-001'").fetchall()
    assert claimed == [("rower-01", "end")]
    assert "1 closed as idle (no end)" in run.stdout   # the abandoned elliptical session: closed, not a fault
    assert ("yellow", "equipment_fault") not in raised


def _read_only(path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _sent_for(work) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(alert subject, alert type) -> [(channel, to)] of every notification the dry run recorded."""
    about = {str(row_id): (subject, kind) for row_id, subject, kind in _read_only(work / "alerts.db").execute(
        "SELECT o.id, a.subject, a.alert_type FROM outbox o JOIN alerts a ON a.id = o.alert_id")}
    sent: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for line in (work / "notifications.jsonl").read_text(encoding="utf-8").splitlines():
        n = json.loads(line)
        if n["attempt_id"] in about:   # not the texts outside any alert (one-time codes, record links)
            sent[about[n["attempt_id"]]].append((n["channel"], n["to"]))
    return sent


def _events(work, subject: str, kind: str) -> list[tuple[str, str]]:
    return _read_only(work / "alerts.db").execute(
        "SELECT e.kind, e.actor FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
        " WHERE a.subject = ? AND a.alert_type = ? ORDER BY e.id", (subject, kind)).fetchall()


def _operations(work) -> dict[str, dict]:
    """What the demo did to the gateway, by action."""
    lines = (work / "operations.jsonl").read_text(encoding="utf-8").splitlines()
    return {op["action"]: op for op in map(json.loads, lines)}


def test_the_safety_scenario_leaves_no_call_for_help_unanswered(tmp_path):
    work = tmp_path / "safety"
    _demo(work, "--scenario", "safety")
    sent = _sent_for(work)
    gw = _read_only(work / "gateway.db")
    opened = {(s, k): ms for s, k, ms in _read_only(work / "alerts.db").execute(
        "SELECT subject, alert_type, opened_ms FROM alerts")}

    # Mrs Wang's SOS, acknowledged by the operator, then pressed again: the duty line is called again.
    assert ("acknowledged", f"token:{OPERATIONS_TOKEN}") in _events(work, "r-001", "sos")
    assert "reopened" in [kind for kind, _ in _events(work, "r-001", "sos")]
    assert sent[("r-001", "sos")].count(("voice", DUTY_LINE)) >= 2, sent[("r-001", "sos")]

    # Mrs Zhao's watch rebooted (seq 1 again, at a later ts) and her SOS still rang the duty line.
    assert gw.execute("SELECT COUNT(*) FROM seen WHERE device_id = 'watch-0003' AND seq = 1").fetchone()[0] == 2
    assert ("voice", DUTY_LINE) in sent[("r-003", "sos")]

    # Mr Li's watch fell silent before the gateway stopped; after it started again the silence was reported.
    restart = _operations(work)["restart_gateway"]
    last_heard = gw.execute("SELECT MAX(received_ms) FROM seen WHERE device_id = 'watch-0002'").fetchone()[0]
    assert last_heard < restart["stopped_ms"] < restart["started_ms"] < opened[("r-002", "watch_silent")]
    assert sent[("r-002", "watch_silent")], "nobody was told Mr Li's watch went silent"

    # Cell-tower fixes whose centres lay outside Mrs Wang's fence for longer than the dwell, but whose
    # accuracy circles overlapped it, raised nothing.
    fence = parse_community(COMMUNITY).wearer("watch-0001").geofence
    drifted = [ts for ts, lat, lon in gw.execute(
        "SELECT ts, lat, lon FROM track WHERE device_id = 'watch-0001' AND source = 'lbs' AND accuracy_m >= 1000")
        if distance_outside_m(fence, lat, lon) > 0]
    assert len(drifted) >= 2 and max(drifted) - min(drifted) >= AlertSettings().geofence_dwell_s * 1000
    assert ("r-001", "geofence_exit") not in opened

    # Mr Li's watch clock jumped 8 h ahead: its messages were dead-lettered and maintenance was told.
    ahead = gw.execute("SELECT COUNT(*) FROM dead_letter WHERE reason = 'ts_in_future'"
                       " AND topic LIKE '%/watch-0002/%'").fetchone()[0]
    assert ahead >= AlertSettings().clock_wrong_count
    assert ("sms", MAINTENANCE) in sent[("watch-0002", "device_clock_wrong")]


def _first_minute_in_the_console(base: str, login: str, chromium, tmp_path) -> None:
    """What a new user does with the demo's console: logs in with the printed login, sees the SOS with its
    escalation on its way, opens it, and acknowledges it. The README's screenshots are taken here."""
    from playwright.sync_api import expect

    from tests.fixtures.browser import log_in, screenshot

    user, password = login.split(" / ")
    desk = chromium.new_context(viewport={"width": 1280, "height": 900})
    phone = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page, small = log_in(desk, base, user, password), log_in(phone, base, user, password)
        sos = page.locator("li.card", has_text="SOS pressed — Wang Guilan")
        expect(sos).to_be_visible()
        expect(sos.locator(".badge")).to_have_text("RED")
        expect(small.locator("li.card", has_text="SOS pressed — Wang Guilan")).to_be_visible()
        screenshot(page, "queue.png", tmp_path)
        screenshot(small, "queue-phone.png", tmp_path)

        sos.locator("a.title").click()
        expect(page.locator(".map svg polyline")).not_to_have_count(0)                 # her track
        expect(page.locator("table.attempts")).to_contain_text(DUTY_LINE)            # the duty line was called
        expect(page.locator("table.events")).to_contain_text("notification sent")     # by the dry-run notifier
        screenshot(page, "alert.png", tmp_path)
        page.evaluate("window.notReloaded = true")
        page.locator("div.detail-head ~ form").get_by_role("button", name="Acknowledge").click()
        expect(page.locator(".detail-head .state")).to_have_text(f"acknowledged by {user}", timeout=15_000)
        assert page.evaluate("window.notReloaded") is True
    finally:
        desk.close()
        phone.close()


def test_keep_running_prints_the_console_login_keeps_devices_moving_and_ctrl_c_stops_everything(tmp_path, chromium):
    work = tmp_path / "demo"
    # Started with SIGINT ignored, as a background job, nohup or a CI runner starts it: Ctrl-C must still stop it.
    proc = subprocess.Popen([sys.executable, "-m", "devtools.demo", "--speed", "0", "--workdir", str(work),
                             "--keep-running"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines: list[str] = []
    try:
        while not any("Everything keeps running" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "the demo ended before keeping things running:\n" + "".join(lines[-40:])
            lines.append(line)
        console = next(line for line in lines if line.startswith("Operator console: "))
        url = console.split()[2]
        login = console.split("log in as ")[1].split(";")[0]   # "chen / sunny-garden-demo"
        assert httpx.get(url.replace("/console", "/health"), timeout=5).json() == {"status": "ok"}

        def accepted() -> int:
            return _read_only(work / "gateway.db").execute("SELECT COUNT(*) FROM seen").fetchone()[0]
        before, deadline = accepted(), time.monotonic() + 60
        while accepted() == before:   # the devices play on, at real time
            assert time.monotonic() < deadline, "no device message after the summary"
            time.sleep(0.5)
        assert login == "chen / sunny-garden-demo"
        _first_minute_in_the_console(url.rsplit("/console", 1)[0], login, chromium, tmp_path)
        assert ("acknowledged", "chen") in _events(work, "r-001", "sos")
    finally:
        os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C in the terminal reaches the whole group
        returncode = proc.wait(timeout=60)
    assert returncode == 0
    # Nothing it started is left: the console, the broker and VictoriaMetrics no longer answer.
    services = next(line for line in lines if line.startswith("Mosquitto on "))
    broker_port = int(services.split("127.0.0.1:")[1].split(",")[0])
    for port in (int(url.split(":")[2].split("/")[0]), broker_port, int(services.rsplit(":", 1)[1])):
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
