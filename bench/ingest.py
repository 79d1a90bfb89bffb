"""Ingest throughput: the gateway against a bare paho subscriber, same broker, same run.

For each consumer: a persistent session subscribes and goes away, N QoS 1
messages are published into its queue, then the consumer connects and the
clock runs until it has handled all N. Publishing is outside the timed
part, so both consumers get the whole machine. The gateway's figure is
end to end: validated, deduplicated, written to VictoriaMetrics, committed
to SQLite and acknowledged.

    .venv/bin/python bench/ingest.py --messages 200000
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import record
from devtools.localpostgres import LocalPostgres
from devtools.localservices import LocalMosquitto, LocalVictoriaMetrics
from eldercare.settings import Settings
from eldercare.wiring import build_observer
from gateway.models import DeviceKind
from gateway.runner import Gateway
from gateway.store import OperationalStore

REPO = Path(__file__).resolve().parent.parent


def messages(count: int, devices: int, seed: int = 7):
    """A realistic mix: 60 % location, 30 % health, 10 % status, ~100-150 bytes each."""
    rng = random.Random(seed)
    base = int(time.time() * 1000) - 3_600_000
    seqs = [0] * devices
    for n in range(count):
        d = n % devices
        seqs[d] += 1
        ts = base + seqs[d] * 10 + d % 10
        r = rng.random()
        if r < 0.6:
            stream, body = "location", {"ts": ts, "seq": seqs[d], "lat": 31.23 + rng.random() / 100,
                                         "lon": 121.47 + rng.random() / 100, "accuracy_m": 8.0, "source": "gps"}
        elif r < 0.9:
            stream, body = "health", {"ts": ts, "seq": seqs[d], "heart_rate": rng.randint(55, 110), "spo2": 97}
        else:
            stream, body = "status", {"ts": ts, "seq": seqs[d], "battery": rng.randint(10, 100), "worn": True,
                                       "steps": rng.randint(0, 9000), "signal_dbm": -80}
        yield f"eldercare/watch/bench-{d}/{stream}", orjson.dumps(body)


def _session_client(broker, creds, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(creds.username, creds.password)
    return c


def _connect_persistent(c: mqtt.Client, port: int) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    c.connect("127.0.0.1", port, clean_start=False, properties=props)


def create_session(broker, creds, client_id: str, topic: str) -> None:
    """Make the broker hold a persistent session with a subscription, then leave."""
    c = _session_client(broker, creds, client_id)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    _connect_persistent(c, broker.port)
    c.loop_start()
    c.subscribe(topic, qos=1)
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def fill(broker, creds, count: int, devices: int) -> float:
    """Publish `count` QoS 1 messages and wait for every PUBACK; returns msg/s of the publisher."""
    c = _session_client(broker, creds, "bench-publisher")
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    elapsed = publish_acknowledged(c, messages(count, devices))
    c.disconnect()
    c.loop_stop()
    return count / elapsed


def publish_acknowledged(c: mqtt.Client, stream, mark: int = -1, then=None) -> float:
    """Publish (topic, payload) pairs at QoS 1 and wait for every PUBACK; `then()` runs before the `mark`-th.
    Returns the seconds it took."""
    start = time.perf_counter()
    infos = []
    for n, (topic, payload) in enumerate(stream):
        if n == mark and then is not None:
            then()
        infos.append(c.publish(topic, payload, qos=1))
        if len(infos) == 20_000:  # MQTT message ids are 16-bit: keep well below 65,535 unacknowledged
            for info in infos:
                info.wait_for_publish(120)
            infos.clear()
    for info in infos:
        info.wait_for_publish(120)
    return time.perf_counter() - start


def bare_subscriber(broker, count: int) -> float:
    """A paho subscriber that only counts (paho acknowledges each message itself)."""
    c = _session_client(broker, broker.gateway, "bench-bare")
    received = 0
    done = threading.Event()

    def on_message(client, userdata, msg):
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    c.on_message = on_message
    start = time.perf_counter()
    _connect_persistent(c, broker.port)
    c.loop_start()
    if not done.wait(600):
        raise SystemExit(f"bare subscriber got {received} of {count}")
    elapsed = time.perf_counter() - start
    unsubscribed = threading.Event()
    c.on_unsubscribe = lambda *a: unsubscribed.set()
    c.unsubscribe("eldercare/#")  # so the gateway's fill is not queued for this session too
    if not unsubscribed.wait(10):
        raise SystemExit("no UNSUBACK from the broker")
    c.disconnect()
    c.loop_stop()
    return count / elapsed


def gateway_run(broker, tsdb, workdir: Path, count: int, devices: int, store_url: str = "") -> tuple[float, dict]:
    settings = Settings(
        instance="bench",
        mqtt={"port": broker.port, "password": broker.gateway.password, "client_id": "bench-gw"},
        sink={"url": tsdb.url, "spool_dir": str(workdir / "spool")},
        store={"path": str(workdir / "gateway.db"), "url": store_url},
        alerts={"db_path": str(workdir / "alerts.db"), "dry_run_log": str(workdir / "notifications.jsonl"),
                "community_file": str(REPO / "examples" / "community.toml")},
    )
    store = OperationalStore(settings.store.database)
    now = int(time.time() * 1000)
    for d in range(devices):
        store.register_device(f"bench-{d}", DeviceKind.WATCH, now)
    alerts = build_observer(settings)  # the alert engine sees every message, as in production
    gateway = Gateway(settings, observer=alerts)
    alerts.start(gateway.registry.known())
    telemetry = next(worker for _, worker in gateway.lanes if worker.name == "telemetry")
    start = time.perf_counter()
    gateway.start()
    while telemetry.pipeline.stats.accepted + telemetry.pipeline.stats.duplicates < count:
        if time.perf_counter() - start > 900:
            raise SystemExit(f"gateway handled {telemetry.pipeline.stats.accepted} of {count}")
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    stats = gateway.stats()
    gateway.stop()
    alerts.close()
    return count / elapsed, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=1_000)
    ap.add_argument("--postgres", action="store_true", help="the operational store in PostgreSQL (a local server)")
    ap.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    store = "PostgreSQL" if args.postgres else "SQLite"

    with tempfile.TemporaryDirectory() as tmp, (LocalPostgres() if args.postgres else nullcontext()) as pg:
        work = Path(tmp)
        store_url = pg.create_database("bench") if pg else ""
        with LocalMosquitto(work / "mosquitto") as broker, LocalVictoriaMetrics(work / "vm") as tsdb:
            create_session(broker, broker.gateway, "bench-bare", "eldercare/#")
            pub_rate = fill(broker, broker.simulator, args.messages, args.devices)
            bare = bare_subscriber(broker, args.messages)
            print(f"bare paho subscriber (count only): {bare:,.0f} msg/s")

            # The gateway's telemetry session must exist before the fill to queue it.
            create_session(broker, broker.gateway, "bench-gw-telemetry", "eldercare/#")
            fill(broker, broker.simulator, args.messages, args.devices)
            gw, stats = gateway_run(broker, tsdb, work, args.messages, args.devices, store_url)
            tsdb.flush()
            print(f"gateway (validate, dedup, VictoriaMetrics, {store}, alert rules, ack): {gw:,.0f} msg/s")
            print(f"ratio gateway / bare: {gw / bare:.2f}   (publisher filled at {pub_rate:,.0f} msg/s)")
            lost = args.messages - stats["telemetry"]["accepted"]
            print(f"lost: {lost}   sink: {stats['sink']}")

    if not args.no_record:
        record(
            "Ingest throughput" + (", PostgreSQL store" if args.postgres else ""),
            f".venv/bin/python bench/ingest.py --messages {args.messages} --devices {args.devices}"
            + (" --postgres" if args.postgres else ""),
            [
                ("messages (QoS 1; bare subscriber MQTT v5, gateway telemetry session as configured, "
                 "3.1.1 by default)", f"{args.messages:,}"),
                ("bare paho subscriber, count only", f"{bare:,.0f} msg/s"),
                (f"gateway, end to end into VictoriaMetrics + {store} + alert engine", f"{gw:,.0f} msg/s"),
                ("ratio gateway / bare (target >= 0.6)", f"{gw / bare:.2f}"),
                ("messages lost", f"{lost}"),
            ],
            notes="Each consumer drains a queue the broker already holds, so publishing is outside the timed part. "
                  "The gateway receives telemetry in a child process (`[ingest] network_process`) and runs the alert "
                  "rules on every message, as in production.",
        )


if __name__ == "__main__":
    main()
