"""SOS latency: from a watch's SOS publish to the moment the call request reaches Twilio, under telemetry load.

Real parts on loopback: Mosquitto, VictoriaMetrics, the gateway as its own
process (`python -m eldercare run`, alert engine and dispatcher inside), and the
Twilio stand-in (Prism behind a recording proxy, which stamps each request as it
arrives: that is when the request has left the gateway). Background telemetry
from the load-mode simulator runs at a share (default 80 %) of the measured
ingest ceiling while SOS presses go out one at a time, each from a different
watch, so each opens an alert whose first step calls the duty line.

The same run is made, with the same load, presses and stand-in, for Node-RED
4.1.8 running bench/peers/nodered/flow-sos.json (--consumer nodered or both):
the batched telemetry flow of bench/compare.py, so Node-RED carries the same
background load into VictoriaMetrics, plus mqtt in (eldercare/watch/+/sos,
QoS 1) -> function (the Calls.json form: To the duty line, From, Twiml naming
the watch; Basic auth) -> core http request to the stand-in. The
node-red-node-twilio package cannot be used for this: its node builds the
Twilio SDK client as twilio(sid, token) with no options, so its requests go to
api.twilio.com and nowhere else (and it passes a TwiML URL, not inline Twiml).
Each consumer gets its own broker, VictoriaMetrics and stand-in.

    .venv/bin/python bench/sos_latency.py --presses 1000
    .venv/bin/python bench/sos_latency.py --presses 30 --consumer nodered --no-record
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import Context, NodeRed, ensure_nodered, vm_count
from bench.report import BENCHMARKS, record
from device_sim.load import LoadReport, run_load
from devtools.localpostgres import LocalPostgres
from devtools.localservices import LocalGateway, LocalMosquitto, LocalVictoriaMetrics, free_port
from devtools.twilio_standin import TwilioStandIn, find_spec
from gateway.models import DeviceKind
from gateway.store import OperationalStore

REPO = Path(__file__).resolve().parent.parent
DUTY_LINE = "+15555550100"
FROM_NUMBER = "+15555550199"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "bench-token"
CONSUMERS = ("gateway", "nodered")
PRESS_TIMEOUT_S = 15.0


def last_ingest_ceiling() -> float | None:
    """The gateway figure of the last `bench/ingest.py` run recorded in BENCHMARKS.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    m = re.search(r"\| gateway, end to end[^|]*\| ([\d,]+) msg/s \|", text)
    return float(m.group(1).replace(",", "")) if m else None


def percentile(values: Sequence[float], p: float) -> float:
    """The value at rank p % of the sorted values (nearest rank, no interpolation); NaN for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass(frozen=True)
class Summary:
    presses: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    def line(self) -> str:
        return (f"{self.presses} presses: p50 {self.p50:.1f} ms, p95 {self.p95:.1f} ms, p99 {self.p99:.1f} ms, "
                f"max {self.max:.1f} ms, mean {self.mean:.1f} ms")


def summarize(latencies: list[float]) -> Summary:
    if not latencies:
        raise ValueError("no latencies to summarize")
    p50, p95, p99 = (percentile(latencies, p) for p in (50, 95, 99))
    return Summary(len(latencies), p50, p95, p99, max(latencies), statistics.mean(latencies))


def gateway_settings(work: Path, broker: LocalMosquitto, tsdb: LocalVictoriaMetrics, twilio_url: str,
                     store_url: str = "") -> dict[str, Any]:
    return {
        "instance": "bench",
        "mqtt": {"port": broker.port, "password": broker.gateway.password, "client_id": "bench-gw"},
        "sink": {"url": tsdb.url, "spool_dir": work / "spool"},
        "store": {"path": work / "gateway.db", "url": store_url},
        "ingest": {"auto_register": True},
        # Every press opens its own red alert; no escalation step may fall due while the presses go on.
        "alerts": {"db_path": work / "alerts.db", "community_file": REPO / "examples" / "community.toml",
                   "ack_deadline_red_s": 3600,
                   "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                              "from_number": FROM_NUMBER, "api_base_url": twilio_url}},
        "web": {"port": free_port()},
    }


def nodered_env(twilio_url: str) -> dict[str, str]:
    """What flow-sos.json's function reads with env.get()."""
    return {"TWILIO_URL": twilio_url, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM": FROM_NUMBER, "DUTY_LINE": DUTY_LINE}


def watch_id(n: int) -> str:
    return f"sos-{n:05d}"


def _call_for(requests: list[Any], watch: str) -> Any:
    """The duty-line call for this watch's alert among the requests, if it has arrived."""
    return next((r for r in requests if r.path.endswith("/Calls.json") and r.field("To") == DUTY_LINE
                 and watch in (r.field("Twiml") or "")), None)


@dataclass
class Presses:
    latencies: list[float] = field(default_factory=list)   # publish -> the call request at the stand-in, ms
    floor: list[float] = field(default_factory=list)       # publish -> an idle subscriber's callback, ms


def _floor_subscriber(broker: LocalMosquitto, arrived: dict[str, float]) -> mqtt.Client:
    """A subscriber that does nothing but note when each press reaches it: the broker's and the machine's share
    of the latency, which no consumer can go below on this box."""
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sos-floor", protocol=mqtt.MQTTv5)
    sub.username_pw_set(broker.gateway.username, broker.gateway.password)
    sub.on_message = lambda c, u, m: arrived.setdefault(m.topic.split("/")[-2], time.time())
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_connect = lambda c, *_: c.subscribe("eldercare/watch/+/sos", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("the floor subscriber could not subscribe")
    return sub


def press_sos(broker: LocalMosquitto, standin: TwilioStandIn, presses: int, max_s: float) -> Presses:
    """Latency (ms) of each press: publish -> the duty-line call request arriving at the stand-in, and publish ->
    an idle subscriber's callback.

    Stops early (fewer latencies than presses) once `max_s` have gone by; raises if one press gets no call."""
    arrived: dict[str, float] = {}
    floor = _floor_subscriber(broker, arrived)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sos", protocol=mqtt.MQTTv5)
    client.username_pw_set(broker.simulator.username, broker.simulator.password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    out = Presses()
    sent: dict[str, float] = {}
    end = time.monotonic() + max_s
    try:
        for n in range(presses):
            if time.monotonic() > end:
                break
            seen = len(standin.requests)
            now_ms = int(time.time() * 1000)
            body = orjson.dumps({"ts": now_ms, "seq": 1, "lat": 31.2304, "lon": 121.4737, "accuracy_m": 10.0})
            sent_at = time.time()
            client.publish(f"eldercare/watch/{watch_id(n)}/sos", body, qos=1)
            deadline = time.monotonic() + PRESS_TIMEOUT_S
            while (req := _call_for(standin.requests[seen:], watch_id(n))) is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"press {n}: no call request within {PRESS_TIMEOUT_S:g} s")
                time.sleep(0.001)
            out.latencies.append((req.received_at - sent_at) * 1000)
            sent[watch_id(n)] = sent_at
            time.sleep(0.05)  # presses are independent events, not a burst
        time.sleep(1)   # the idle subscriber may hear the last press after the gateway has handled it
    finally:
        for c in (client, floor):
            c.loop_stop()
            c.disconnect()
    out.floor = [(arrived[w] - at) * 1000 for w, at in sent.items() if w in arrived]
    return out


# ---- the two consumers: each started with its own broker, store and stand-in, stopped however the run ends ----------

@contextmanager
def gateway_under_test(work: Path, broker: LocalMosquitto, tsdb: LocalVictoriaMetrics, standin: TwilioStandIn,
                       presses: int, store_url: str, out: dict[str, str]) -> Iterator[None]:
    store = OperationalStore(store_url or work / "gateway.db")
    try:
        now = int(time.time() * 1000)
        for n in range(presses):
            store.register_device(watch_id(n), DeviceKind.WATCH, now)
        gateway = LocalGateway(work / "gateway", gateway_settings(work, broker, tsdb, standin.base_url, store_url))
        gateway.start()
        try:
            yield
        finally:
            gateway.stop()
        out["handled"] = f"messages handled by the gateway: {store.seen_count():,}"
    finally:
        store.close()


@contextmanager
def nodered_under_test(work: Path, broker: LocalMosquitto, tsdb: LocalVictoriaMetrics, standin: TwilioStandIn,
                       out: dict[str, str]) -> Iterator[None]:
    nodered = NodeRed(Context(broker, tsdb, work, 0), work / "nodered", "sos", nodered_env(standin.base_url))
    try:
        nodered.start(lambda pid: None)
        yield
    finally:
        nodered.stop()   # its process group, by the pid it was started with
    out["handled"] = f"telemetry points Node-RED wrote to VictoriaMetrics: {vm_count(tsdb):,}"
    errors = sum("[error]" in line for line in nodered.log.read_text(errors="replace").splitlines())
    out["errors"] = f"{errors:,}"


@dataclass
class Run:
    consumer: str
    summary: Summary
    load: LoadReport | None
    facts: dict[str, str] = field(default_factory=dict)
    floor: Summary | None = None   # publish -> an idle subscriber, in the same run

    @property
    def achieved(self) -> str:
        return f"{self.load.achieved_rate:,.0f} msg/s" if self.load else "did not finish"


def run_consumer(consumer: str, spec: Path, rate: float, presses: int, max_s: float, store_url: str) -> Run:
    """One consumer under the background load: its own broker, VictoriaMetrics and Twilio stand-in."""
    with tempfile.TemporaryDirectory(prefix=f"bench-sos-{consumer}-") as tmp:
        work = Path(tmp)
        with LocalMosquitto(work / "mosquitto") as broker, LocalVictoriaMetrics(work / "vm") as tsdb:
            standin = TwilioStandIn.start(spec, workdir=work)
            facts: dict[str, str] = {}
            try:
                under_test: AbstractContextManager[None] = (
                    gateway_under_test(work, broker, tsdb, standin, presses, store_url, facts) if consumer == "gateway"
                    else nodered_under_test(work, broker, tsdb, standin, facts))
                with under_test:
                    pressed, load = press_under_load(broker, standin, rate, presses, max_s)
            finally:
                standin.stop()
    return Run(consumer, summarize(pressed.latencies), load, facts,
               summarize(pressed.floor) if pressed.floor else None)


def press_under_load(broker: LocalMosquitto, standin: TwilioStandIn, rate: float, presses: int,
                     max_s: float) -> tuple[Presses, LoadReport | None]:
    duration = 30 + presses * 0.15
    load: dict[str, LoadReport] = {}
    loader = threading.Thread(target=lambda: load.setdefault("report", run_load(
        port=broker.port, username=broker.simulator.username, password=broker.simulator.password,
        devices=10_000, rate=rate, duration=duration, processes=1)), daemon=True)
    loader.start()
    time.sleep(10)  # let the background reach its steady state
    try:
        pressed = press_sos(broker, standin, presses, max_s)
    finally:
        loader.join(duration + 120)   # the load ends by itself after `duration`
    return pressed, load.get("report")


LABELS = {"gateway": "", "nodered": "Node-RED: "}   # the gateway's rows keep the labels they always had


def rows(run: Run) -> list[tuple[str, str]]:
    s, pre = run.summary, LABELS[run.consumer]
    what = ("SOS presses (each a new red alert, first step: call the duty line)" if run.consumer == "gateway" else
            "SOS presses (flow-sos.json: mqtt in -> function -> http request to the stand-in)")
    out = [(f"{pre}{what}", f"{s.presses}"),
           (f"{pre}background telemetry achieved by the simulator"
            + (" (through its batched flow)" if run.consumer == "nodered" else ""), run.achieved),
           (f"{pre}p50 publish -> Twilio request", f"{s.p50:.1f} ms"),
           (f"{pre}p95", f"{s.p95:.1f} ms"),
           (f"{pre}p99" + (" (target ≤ 50 ms, issue 12)" if run.consumer == "gateway" else ""), f"{s.p99:.1f} ms"),
           (f"{pre}max", f"{s.max:.1f} ms")]
    if (f := run.floor) is not None:
        out.append((f"{pre}floor: publish -> an idle subscriber's callback, p50 / p95 / p99 / max",
                    f"{f.p50:.1f} / {f.p95:.1f} / {f.p99:.1f} / {f.max:.1f} ms"))
    if "errors" in run.facts:
        out.append((f"{pre}errors in its log (Twilio answers other than 2xx among them)", run.facts["errors"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--presses", type=int, default=1000, help="SOS presses measured per consumer (each from its own watch)")
    ap.add_argument("--consumer", choices=(*CONSUMERS, "both"), default="both")
    ap.add_argument("--ceiling", type=float, default=None,
                    help="ingest ceiling in msg/s (default: the gateway figure last recorded by bench/ingest.py)")
    ap.add_argument("--load-share", type=float, default=0.8, help="background telemetry as a share of the ceiling")
    ap.add_argument("--postgres", action="store_true", help="the gateway's operational store in PostgreSQL (a local server)")
    ap.add_argument("--max-s", type=float, default=900.0, help="stop pressing after this long (per consumer)")
    ap.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    consumers = list(CONSUMERS) if args.consumer == "both" else [args.consumer]
    ceiling = args.ceiling or last_ingest_ceiling()
    if not ceiling:
        raise SystemExit("no ingest ceiling: run bench/ingest.py first or pass --ceiling")
    rate = ceiling * args.load_share
    spec = find_spec()
    if spec is None:
        raise SystemExit("Twilio OpenAPI spec not found (see devtools/twilio_standin.py)")
    if "nodered" in consumers:
        ensure_nodered()

    runs: list[Run] = []
    with LocalPostgres() if args.postgres else nullcontext() as pg:
        store_url = pg.create_database("bench") if pg else ""
        for consumer in consumers:
            print(f"{consumer}: {args.presses} presses under {rate:,.0f} msg/s of telemetry", file=sys.stderr, flush=True)
            runs.append(run_consumer(consumer, spec, rate, args.presses, args.max_s, store_url))
    print(f"background telemetry asked: {rate:,.0f} msg/s ({args.load_share:.0%} of {ceiling:,.0f})")
    for run in runs:
        print(f"{run.consumer}: background achieved {run.achieved}; SOS -> Twilio request, {run.summary.line()}")
        if run.floor is not None:
            print(f"  floor (publish -> an idle subscriber): {run.floor.line()}")
        for key, value in run.facts.items():
            print(f"  {key}: {value}")
    if args.no_record:
        return
    record(
        "SOS latency under telemetry load" + (", PostgreSQL store" if args.postgres else ""),
        f".venv/bin/python bench/sos_latency.py --presses {args.presses}" + (" --postgres" if args.postgres else "")
        + (f" --consumer {args.consumer}" if args.consumer != "both" else "")
        + (f" --ceiling {args.ceiling:g}" if args.ceiling else ""),
        [("background telemetry asked (share of ingest ceiling)",
          f"{rate:,.0f} msg/s ({args.load_share:.0%} of {ceiling:,.0f})")] + [row for run in runs for row in rows(run)],
        notes="Latency runs from just before `publish()` to the moment the recording proxy in front of Prism has "
              "read the whole `Calls.json` request. Every press opens a new red alert in the gateway, and all of them "
              "stay open and are re-evaluated each second. Node-RED runs `bench/peers/nodered/flow-sos.json`: the "
              "batched telemetry flow of `bench/compare.py` (it writes the background load to VictoriaMetrics) and "
              "mqtt in (QoS 1) -> function (To, From, Twiml, Basic auth) -> core http request (keep-alive) to the same "
              "stand-in; it does nothing else with a press (no alert, no state, no escalation). node-red-node-twilio "
              "cannot be pointed at the stand-in: it builds its client as `twilio(sid, token)` with no options, so it "
              "only talks to api.twilio.com. Each consumer runs alone, with its own broker, VictoriaMetrics and "
              "stand-in. The floor is a subscriber in the benchmark's own process that does nothing but note when "
              "each press reaches it: the broker's and the machine's share, below which no consumer can go here. "
              "The machine is saturated (broker, load generator, consumer, VictoriaMetrics and Prism on "
              "2 cores), so the tail moves by tens of milliseconds between runs.",
    )


if __name__ == "__main__":
    main()
