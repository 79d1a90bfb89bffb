"""SOS latency: from a watch's SOS publish to the moment the call request reaches Twilio, under telemetry load.

Real parts on loopback: Mosquitto, VictoriaMetrics, the gateway as its own
process (`python -m eldercare run`, alert engine and dispatcher inside), and the
Twilio stand-in (Prism behind a recording proxy, which stamps each request as it
arrives: that is when the request has left the gateway). Background telemetry
from the load-mode simulator runs at a share (default 80 %) of the measured
ingest ceiling while SOS presses go out one at a time, each from a different
watch, so each opens an alert whose first step calls the duty line.

    .venv/bin/python bench/sos_latency.py --presses 200
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import BENCHMARKS, record
from device_sim.load import run_load
from devtools.localpostgres import LocalPostgres
from devtools.localservices import LocalGateway, LocalMosquitto, LocalVictoriaMetrics, free_port
from devtools.twilio_standin import TwilioStandIn, find_spec
from gateway.models import DeviceKind
from gateway.store import OperationalStore

REPO = Path(__file__).resolve().parent.parent
DUTY_LINE = "+15555550100"


def last_ingest_ceiling() -> float | None:
    """The gateway figure of the last `bench/ingest.py` run recorded in BENCHMARKS.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    m = re.search(r"\| gateway, end to end[^|]*\| ([\d,]+) msg/s \|", text)
    return float(m.group(1).replace(",", "")) if m else None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def gateway_settings(work: Path, broker, tsdb, twilio_url: str, store_url: str = "") -> dict:
    return {
        "instance": "bench",
        "mqtt": {"port": broker.port, "password": broker.gateway.password, "client_id": "bench-gw"},
        "sink": {"url": tsdb.url, "spool_dir": work / "spool"},
        "store": {"path": work / "gateway.db", "url": store_url},
        "ingest": {"auto_register": True},
        # Every press opens its own red alert; no escalation step may fall due while the presses go on.
        "alerts": {"db_path": work / "alerts.db", "community_file": REPO / "examples" / "community.toml",
                   "ack_deadline_red_s": 3600,
                   "twilio": {"account_sid": "AC" + "0123456789abcdef" * 2, "auth_token": "bench-token",
                              "from_number": "+15555550199", "api_base_url": twilio_url}},
        "web": {"port": free_port()},
    }


def _call_for(requests, watch: str):
    """The duty-line call for this watch's alert among the requests, if it has arrived."""
    return next((r for r in requests if r.path.endswith("/Calls.json") and r.field("To") == DUTY_LINE
                 and watch in (r.field("Twiml") or "")), None)


def press_sos(broker, standin, presses: int) -> list[float]:
    """Latency (ms) of each press: publish -> the duty-line call request arriving at the stand-in."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sos", protocol=mqtt.MQTTv5)
    client.username_pw_set(broker.simulator.username, broker.simulator.password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    latencies = []
    try:
        for n in range(presses):
            seen = len(standin.requests)
            now_ms = int(time.time() * 1000)
            body = orjson.dumps({"ts": now_ms, "seq": 1, "lat": 31.2304, "lon": 121.4737, "accuracy_m": 10.0})
            sent_at = time.time()
            client.publish(f"eldercare/watch/sos-{n:05d}/sos", body, qos=1)
            deadline = time.monotonic() + 15
            while (req := _call_for(standin.requests[seen:], f"sos-{n:05d}")) is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"press {n}: no call request within 15 s")
                time.sleep(0.001)
            latencies.append((req.received_at - sent_at) * 1000)
            time.sleep(0.05)  # presses are independent events, not a burst
    finally:
        client.loop_stop()
        client.disconnect()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presses", type=int, default=200, help="SOS presses measured (each from its own watch)")
    ap.add_argument("--ceiling", type=float, default=None,
                    help="ingest ceiling in msg/s (default: the gateway figure last recorded by bench/ingest.py)")
    ap.add_argument("--load-share", type=float, default=0.8, help="background telemetry as a share of the ceiling")
    ap.add_argument("--postgres", action="store_true", help="the operational store in PostgreSQL (a local server)")
    ap.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    ceiling = args.ceiling or last_ingest_ceiling()
    if not ceiling:
        raise SystemExit("no ingest ceiling: run bench/ingest.py first or pass --ceiling")
    rate = ceiling * args.load_share
    spec = find_spec()
    if spec is None:
        raise SystemExit("Twilio OpenAPI spec not found (see devtools/twilio_standin.py)")

    with tempfile.TemporaryDirectory() as tmp, (LocalPostgres() if args.postgres else nullcontext()) as pg:
        work = Path(tmp)
        store_url = pg.create_database("bench") if pg else ""
        with LocalMosquitto(work / "mosquitto") as broker, LocalVictoriaMetrics(work / "vm") as tsdb:
            standin = TwilioStandIn.start(spec)
            store = OperationalStore(store_url or work / "gateway.db")
            now = int(time.time() * 1000)
            for n in range(args.presses):
                store.register_device(f"sos-{n:05d}", DeviceKind.WATCH, now)
            gateway = LocalGateway(work / "gateway", gateway_settings(work, broker, tsdb, standin.base_url, store_url))
            gateway.start()
            duration = 30 + args.presses * 0.15
            load: dict = {}
            loader = threading.Thread(target=lambda: load.setdefault("report", run_load(
                port=broker.port, username=broker.simulator.username, password=broker.simulator.password,
                devices=10_000, rate=rate, duration=duration, processes=1)), daemon=True)
            try:
                loader.start()
                time.sleep(10)  # let the background reach its steady state
                latencies = press_sos(broker, standin, args.presses)
                loader.join(duration + 120)
            finally:
                gateway.stop()
                standin.stop()
            handled = store.seen_count()
            store.close()
    report = load.get("report")
    p50, p95, p99 = (percentile(latencies, p) for p in (50, 95, 99))
    achieved = f"{report.achieved_rate:,.0f} msg/s" if report else "did not finish"
    print(f"background telemetry: asked {rate:,.0f} msg/s (80 % of {ceiling:,.0f}), achieved {achieved}")
    print(f"SOS -> Twilio request, {len(latencies)} presses: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
          f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms, mean {statistics.mean(latencies):.1f} ms")
    print(f"messages handled by the gateway: {handled:,}")
    if not args.no_record:
        record(
            "SOS latency under telemetry load" + (", PostgreSQL store" if args.postgres else ""),
            f".venv/bin/python bench/sos_latency.py --presses {args.presses}" + (" --postgres" if args.postgres else "")
            + (f" --ceiling {args.ceiling:g}" if args.ceiling else ""),
            [
                ("SOS presses (each a new red alert, first step: call the duty line)", f"{len(latencies)}"),
                ("background telemetry asked (share of ingest ceiling)",
                 f"{rate:,.0f} msg/s ({args.load_share:.0%} of {ceiling:,.0f})"),
                ("background telemetry achieved by the simulator", achieved),
                ("p50 publish -> Twilio request", f"{p50:.1f} ms"),
                ("p95", f"{p95:.1f} ms"),
                ("p99 (target < 250 ms)", f"{p99:.1f} ms"),
                ("max", f"{max(latencies):.1f} ms"),
            ],
            notes="Latency runs from just before `publish()` to the moment the recording proxy in front of Prism has "
                  "read the whole `Calls.json` request. Every press opens a new red alert, and all of them stay open "
                  "and are re-evaluated each second. The machine is saturated (broker, load generator, gateway, "
                  "VictoriaMetrics and Prism on 2 cores), so the tail moves by tens of milliseconds between runs.",
        )


if __name__ == "__main__":
    main()
