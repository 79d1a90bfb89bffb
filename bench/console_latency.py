"""Console speed: an SOS publish to its card in connected browsers, and the queue page with a full queue.

Real parts on loopback: Mosquitto, VictoriaMetrics, the gateway as its own process
(alert engine, dry-run notifier, web server) and Debian's Chromium driven by Playwright.

1. Live push: `--consoles` browser pages log in and watch the queue while background
   telemetry runs at a share of the measured ingest ceiling. SOS presses go out one at a
   time, each from its own watch (a new red alert); a MutationObserver in every page notes
   the wall-clock time its card appears. Latency = that time minus the publish time.
2. A full queue: `--alerts` open alerts and `--devices` registered devices with state;
   the queue page and the devices page are loaded repeatedly, timed at the server
   (HTTP response complete) and in the browser (navigation until `load`).

    .venv/bin/python bench/console_latency.py --presses 200 --consoles 10
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.lifecycle import open_alert
from alerts.rules import Finding
from alerts.store import AlertStore, Database
from alerts.vocabulary import AlertType, Severity
from bench.report import record
from bench.sos_latency import last_ingest_ceiling, percentile
from dashboards.accounts import AccountStore, Role
from device_sim.load import run_load
from device_sim.progress import Progress
from devtools.localservices import LocalGateway, LocalMosquitto, LocalVictoriaMetrics, free_port
from gateway.models import DeviceKind, DeviceMessage, WatchStatus
from gateway.store import OperationalStore

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
USER, PASSWORD = "bench", "bench password 1234"
# Each page notes when a card for a watch first appears (wall clock, ms), keyed by the watch in its title.
OBSERVE = """
window.seenAt = {};
const note = () => document.querySelectorAll('li.card a.title').forEach(a => {
  const m = a.textContent.match(/sos-\\d+/); if (m && !(m[0] in window.seenAt)) window.seenAt[m[0]] = Date.now();
});
new MutationObserver(note).observe(document.body, {childList: true, subtree: true});
note();
"""


def settings(work: Path, broker, tsdb, web_port: int) -> dict:
    return {
        "instance": "bench",
        "mqtt": {"port": broker.port, "password": broker.gateway.password, "client_id": "bench-console"},
        "sink": {"url": tsdb.url, "spool_dir": work / "spool"},
        "store": {"path": work / "gateway.db"},
        "ingest": {"auto_register": True},
        "alerts": {"db_path": work / "alerts.db", "community_file": REPO / "examples" / "community.toml",
                   "dry_run": True, "dry_run_log": work / "notifications.jsonl", "ack_deadline_red_s": 3600},
        "web": {"port": web_port, "db_path": work / "web.db"},
    }


def log_in(browser, base: str):
    page = browser.new_context().new_page()
    page.goto(f"{base}/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button.primary")
    page.wait_for_url(f"{base}/console")
    page.wait_for_selector("#live-status.on")
    return page


def live_push(base: str, broker, browser, presses: int, consoles: int, rate: float) -> tuple[list[float], str]:
    pages = [log_in(browser, base) for _ in range(consoles)]
    for page in pages:
        page.evaluate(OBSERVE)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sos", protocol=mqtt.MQTTv5)
    client.username_pw_set(broker.simulator.username, broker.simulator.password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    duration = 20 + presses * 0.6
    load: dict = {}
    loader = threading.Thread(target=lambda: load.setdefault("report", run_load(
        port=broker.port, username=broker.simulator.username, password=broker.simulator.password,
        devices=10_000, rate=rate, duration=duration, processes=1)), daemon=True)
    loader.start()
    time.sleep(5)
    latencies: list[float] = []
    progress = Progress(sys.stderr)
    try:
        for n in range(presses):
            watch = f"sos-{n:05d}"
            now_ms = int(time.time() * 1000)
            sent_ms = time.time() * 1000
            client.publish(f"eldercare/watch/{watch}/sos",
                           orjson.dumps({"ts": now_ms, "seq": 1, "lat": 31.2304, "lon": 121.4737}), qos=1)
            deadline = time.monotonic() + 30
            for page in pages:
                while (seen := page.evaluate(f"window.seenAt['{watch}']")) is None:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"press {n}: a console did not show it within 30 s")
                    page.wait_for_timeout(5)
                latencies.append(seen - sent_ms)
            progress.show(f"press {n + 1}/{presses}")
            time.sleep(0.1)
    finally:
        progress.done()
        client.loop_stop()
        loader.join(duration + 60)
        for page in pages:
            page.context.close()
    report = load.get("report")
    return latencies, (f"{report.achieved_rate:,.0f} msg/s" if report else "did not finish")


def fill(work: Path, alerts: int, devices: int) -> None:
    """`alerts` open alerts (a mix of grades) and `devices` watches with a last state, written before the gateway starts."""
    now = int(time.time() * 1000)
    db = Database(work / "alerts.db")
    store = AlertStore(db)
    kinds = [(AlertType.SOS, Severity.RED), (AlertType.GEOFENCE_EXIT, Severity.ORANGE), (AlertType.BATTERY_LOW, Severity.YELLOW)]
    for i in range(alerts):
        kind, severity = kinds[i % 3]
        store.insert(open_alert(Finding(kind, severity, f"fill-{i:05d}", now - i * 1000), f"fill-{i:05d}", None, now - i * 1000))
    db.close()
    ops = OperationalStore(work / "gateway.db")
    for i in range(devices):
        ops.register_device(f"fill-{i:05d}", DeviceKind.WATCH, now)
    batch = [DeviceMessage(f"fill-{i:05d}", DeviceKind.WATCH, WatchStatus(ts=now, seq=1, battery=i % 100, worn=True))
             for i in range(devices)]
    ops.commit_batch(batch, [], now)
    ops.close()


def page_loads(base: str, browser, path: str, repeats: int) -> tuple[list[float], list[float], int]:
    """(server ms, browser ms, page bytes) of `repeats` loads of `path`."""
    page = log_in(browser, base)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    server, in_browser, size = [], [], 0
    with httpx.Client(base_url=base, cookies=cookies, timeout=30) as http:
        for _ in range(repeats):
            start = time.perf_counter()
            r = http.get(path, headers={"Accept": "text/html"})
            server.append((time.perf_counter() - start) * 1000)
            size = len(r.content)
            r.raise_for_status()
    for _ in range(repeats):
        page.goto(f"{base}{path}")
        in_browser.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
    page.context.close()
    return server, in_browser, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--consoles", type=int, default=10)
    ap.add_argument("--load-share", type=float, default=0.5, help="background telemetry as a share of the ingest ceiling")
    ap.add_argument("--alerts", type=int, default=1000, help="open alerts for the page-load measure")
    ap.add_argument("--devices", type=int, default=10_000, help="devices for the page-load measure")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    ceiling = last_ingest_ceiling()
    if not ceiling:
        raise SystemExit("no ingest ceiling: run bench/ingest.py first")
    rate = ceiling * args.load_share
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        work = Path(tmp)
        with LocalMosquitto(work / "mosquitto") as broker, LocalVictoriaMetrics(work / "vm") as tsdb:
            accounts = AccountStore(work / "web.db")
            accounts.create_account(USER, PASSWORD, Role.OPERATOR, int(time.time() * 1000))
            accounts.close()
            web_port = free_port()
            base = f"http://127.0.0.1:{web_port}"
            gateway = LocalGateway(work / "gateway", settings(work, broker, tsdb, web_port))
            gateway.start()
            try:
                latencies, achieved = live_push(base, broker, browser, args.presses, args.consoles, rate)
            finally:
                gateway.stop()
            for f in ("alerts.db", "alerts-devices.db", "gateway.db"):
                for suffix in ("", "-wal", "-shm"):
                    (work / f"{f}{suffix}").unlink(missing_ok=True)
            fill(work, args.alerts, args.devices)
            gateway.start()
            try:
                queue = page_loads(base, browser, "/console", args.repeats)
                fleet = page_loads(base, browser, "/fleet", args.repeats)
            finally:
                gateway.stop()
        browser.close()
    p50, p95, p99 = (percentile(latencies, p) for p in (50, 95, 99))
    print(f"SOS publish -> card in {args.consoles} consoles, {args.presses} presses: p50 {p50:.0f} ms, "
          f"p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {max(latencies):.0f} ms; telemetry {achieved}")
    rows = [("SOS presses x connected consoles", f"{args.presses} x {args.consoles}"),
            ("background telemetry asked / achieved",
             f"{rate:,.0f} msg/s ({args.load_share:.0%} of {ceiling:,.0f}) / {achieved}"),
            ("p50 publish -> card shown in a console", f"{p50:.0f} ms"),
            ("p95", f"{p95:.0f} ms"),
            ("p99", f"{p99:.0f} ms"),
            ("max", f"{max(latencies):.0f} ms")]
    for name, (server, in_browser, size) in (("queue page (`/console`)", queue), ("devices page (`/fleet`)", fleet)):
        rows.append((f"{name}, {args.alerts:,} open alerts, {args.devices:,} devices: server p50 / p95",
                     f"{percentile(server, 50):.0f} ms / {percentile(server, 95):.0f} ms ({size / 1024:.0f} KiB)"))
        rows.append((f"{name}: in the browser until `load`, p50 / p95",
                     f"{percentile(in_browser, 50):.0f} ms / {percentile(in_browser, 95):.0f} ms"))
    for k, v in rows:
        print(f"  {k}: {v}")
    if not args.no_record:
        record("Operator console", f".venv/bin/python bench/console_latency.py --presses {args.presses} "
               f"--consoles {args.consoles}", rows,
               notes="Each press opens a new red alert, so the queue grows to as many cards as presses; on each "
                     "event every console fetches that alert's card alone and puts it in its place. The queue page "
                     "draws the first `[web] queue_page_size` (200) cards and counts the rest. Chromium (all "
                     "consoles), the gateway, the broker, VictoriaMetrics and the load generator share the 2 cores.")


if __name__ == "__main__":
    main()
