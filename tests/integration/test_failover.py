"""Active and standby gateway processes sharing one Mosquitto and one PostgreSQL: kill -9 the active at three
moments while telemetry flows and 20 SOS presses arrive; the standby takes over each time, and in the end
every telemetry message is stored exactly once and every SOS gave exactly one alert and one first call.
And PostgreSQL stopped for 30 s under the active: it fences itself, loses nothing and resumes by itself.

How fast the takeover is belongs to the benchmark (`bench/failover.py`, in BENCHMARKS.md); here the waits
are generous (no timed assertions) and the times are printed.
"""
from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import httpx
import psycopg

from devtools.localpostgres import LocalPostgres
from devtools.localservices import free_port
from tests.fixtures.gateway_proc import GatewayProcess, Publisher, location, register, wait_until

SOS_PRESSES = 20
WATCHES = [f"watch-fo-{i:02d}" for i in range(1, SOS_PRESSES + 1)]
TRACKERS = ("watch-fo-t1", "watch-fo-t2", "watch-fo-t3")
KILLS = 3
DUTY_LINE = "+15555550100"


def _gateway(tmp_path: Path, name: str, mosquitto, victoria, url: str) -> GatewayProcess:
    port = free_port()
    gateway = GatewayProcess(tmp_path / name, mosquitto, victoria, {
        "instance": name,
        "store": {"url": url},
        "web": {"enabled": True, "port": port},
        "alerts": {"tick_interval_s": 0.2, "dry_run_log": str(tmp_path / name / "notifications.jsonl")},
    })
    gateway.base = f"http://127.0.0.1:{port}"
    return gateway


def _ready(gateway: GatewayProcess) -> tuple[int, str]:
    try:
        r = httpx.get(f"{gateway.base}/ready", timeout=2)
        return r.status_code, r.json()["status"]
    except httpx.HTTPError:
        return 0, "down"


def _first_calls(gateways, url: str) -> dict[str, int]:
    """Subject (resident or device) of each SOS alert -> voice calls to the duty line recorded by either process."""
    with psycopg.connect(url, autocommit=True) as db:
        subject_of = {str(row_id): subject for row_id, subject in db.execute(
            "SELECT o.id, a.subject FROM outbox o JOIN alerts a ON a.id = o.alert_id WHERE a.alert_type = 'sos'")}
    calls: dict[str, int] = {}
    for gateway in gateways:
        log = gateway.workdir / "notifications.jsonl"
        for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
            n = json.loads(line)
            if n["channel"] == "voice" and n["to"] == DUTY_LINE and n["attempt_id"] in subject_of:
                calls[subject_of[n["attempt_id"]]] = calls.get(subject_of[n["attempt_id"]], 0) + 1
    return calls


class Telemetry(threading.Thread):
    """Positions from three watches, about 40 a second, until stopped; every one gets its own (ts, seq)."""

    def __init__(self, mosquitto) -> None:
        super().__init__(daemon=True)
        self.pubs = [Publisher(mosquitto, mosquitto.add_device(w), client_id=w) for w in TRACKERS]
        self.sent = 0
        self.halt = threading.Event()
        self.base = int(time.time() * 1000) - 3_600_000

    def run(self) -> None:
        seq = 0
        while not self.halt.wait(0.075) and seq < 5_000:
            seq += 1
            for watch, pub in zip(TRACKERS, self.pubs, strict=True):
                pub.publish(f"eldercare/watch/{watch}/location", location(seq, self.base))
                self.sent += 1

    def finish(self) -> int:
        self.halt.set()
        self.join()
        for pub in self.pubs:
            pub.wait_all()
            pub.close()
        return self.sent


def test_kill_9_of_the_active_three_times_loses_and_doubles_nothing(mosquitto, victoria, postgres_url, tmp_path):
    active = _gateway(tmp_path, "gw-a", mosquitto, victoria, postgres_url)
    standby = _gateway(tmp_path, "gw-b", mosquitto, victoria, postgres_url)
    try:
        register(active.store, *WATCHES, *TRACKERS)
        accounts = {watch: mosquitto.add_device(watch) for watch in WATCHES}   # before any thread publishes
        active.start()
        standby.start_as_standby()
        assert _ready(active) == (200, "active") and _ready(standby) == (503, "standby")

        def press(watch: str) -> None:
            pub = Publisher(mosquitto, accounts[watch], client_id=watch)
            pub.publish(f"eldercare/watch/{watch}/sos", {"ts": int(time.time() * 1000), "seq": 1, "lat": 31.23, "lon": 121.47})
            pub.wait_all()
            pub.close()

        rng = random.Random(11)
        in_gaps, spread = WATCHES[:KILLS], WATCHES[KILLS:]   # one press right after each kill, the rest over the run
        presser = threading.Thread(target=lambda: [press(w) for w in spread if not time.sleep(rng.uniform(0.2, 0.6))],
                                   daemon=True)
        telemetry = Telemetry(mosquitto)
        telemetry.start()
        presser.start()
        both = (active, standby)   # the roles swap; the pair stays
        takeovers, rings = [], []
        for watch in in_gaps:
            time.sleep(rng.uniform(0.5, 2.5))   # a moment of the run, telemetry and presses in flight
            active.kill9()
            killed_at = time.monotonic()
            press(watch)   # published while no gateway is active
            wait_until(lambda s=standby: _ready(s) == (200, "active"), 30, "the standby to take over")
            takeovers.append(time.monotonic() - killed_at)
            wait_until(lambda w=watch: w in _first_calls(both, postgres_url), 30, f"the first call for {watch}")
            rings.append(time.monotonic() - killed_at)
            active.start_as_standby()   # the killed one comes back and waits
            active, standby = standby, active

        presser.join(60)
        published = telemetry.finish()
        wait_until(lambda: active.store.seen_count() >= published + SOS_PRESSES, 60, "every message in the store")
        wait_until(lambda: len(_first_calls(both, postgres_url)) >= SOS_PRESSES, 60, "every SOS's first call")
        print(f"takeover after kill -9: {[f'{t:.1f}' for t in takeovers]} s; SOS in the gap rang after "
              f"{[f'{t:.1f}' for t in rings]} s")

        assert active.store.seen_count() == published + SOS_PRESSES   # each telemetry message and each SOS, once
        assert victoria.wait_for_samples('{__name__="location_seq"}', published) == published
        calls = _first_calls(both, postgres_url)
        assert sorted(calls) == sorted(WATCHES) and set(calls.values()) == {1}, calls   # one first call per SOS
        with psycopg.connect(postgres_url, autocommit=True) as db:
            alerts = db.execute("SELECT count(*), count(DISTINCT subject) FROM alerts WHERE alert_type = 'sos'").fetchone()
        assert alerts == (SOS_PRESSES, SOS_PRESSES)
        assert _ready(standby) == (503, "standby")
    finally:   # both processes, whichever role each ended in
        active.stop()
        standby.stop()


OUTAGE_S = 30


def _count(store) -> int:
    """Rows in `seen`, or -1 while the store cannot answer (its connection comes back by itself)."""
    try:
        return store.seen_count()
    except Exception:
        return -1


def test_postgresql_down_for_30_s_stops_acknowledging_loses_nothing_and_resumes_by_itself(mosquitto, victoria, tmp_path):
    server = LocalPostgres()
    server.start()
    gateway = None
    try:
        url = server.create_database("outage")
        gateway = _gateway(tmp_path, "gw-a", mosquitto, victoria, url)
        register(gateway.store, *TRACKERS, WATCHES[0])
        gateway.start()
        telemetry = Telemetry(mosquitto)
        telemetry.start()
        wait_until(lambda: _count(gateway.store) > 30, 30, "telemetry flowing")

        server.halt()
        log = gateway.workdir / "gateway.log"
        wait_until(lambda: "fenced:" in log.read_text(encoding="utf-8"), 30, "the active to fence itself")
        pub = Publisher(mosquitto, mosquitto.add_device(WATCHES[0]), client_id=WATCHES[0])
        pub.publish(f"eldercare/watch/{WATCHES[0]}/sos", {"ts": int(time.time() * 1000), "seq": 1, "lat": 31.2, "lon": 121.4})
        pub.wait_all()   # the broker has it; the gateway may not take it yet
        pub.close()
        time.sleep(OUTAGE_S)
        assert _ready(gateway)[1] in ("standby", "down")   # not active while the store is away
        server.resume()

        wait_until(lambda: _ready(gateway) == (200, "active"), 60, "the gateway to become active again by itself")
        published = telemetry.finish()
        wait_until(lambda: _count(gateway.store) >= published + 1, 60, "every message in the store")
        assert _count(gateway.store) == published + 1
        assert victoria.wait_for_samples('{__name__="location_seq"}', published) == published
        wait_until(lambda: _first_calls((gateway,), url), 30, "the SOS's first call")
        assert list(_first_calls((gateway,), url).values()) == [1]
    finally:
        if gateway is not None:
            gateway.store.close()
            gateway.kill9()
        server.stop()
