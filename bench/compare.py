"""Against the peers: this gateway and what a team would wire instead, same broker, same store, same stream, one run.

One Mosquitto and one VictoriaMetrics on loopback serve the whole run. Every
consumer gets the same QoS 1 stream (`bench.ingest.messages`: location,
health and status from --devices watches, each body carrying the device's
`ts` and a per-device `seq`) and a VictoriaMetrics with no data in it
(stopped, its data directory removed, started again on the same port).

Consumers, each a process of its own (its CPU and memory are its process
group's, sampled from /proc every 0.2 s):

    bare                 a paho subscriber that only counts (bench/peers/bare_subscriber.py),
                         MQTT 3.1.1 (paho's cheaper client), persistent session; it stores nothing
    gateway              `python -m eldercare run`, auto-registration on, alert engine inside,
                         SQLite operational store
    nodered-per-message  Node-RED 4.1.8 + node-red-contrib-influxdb 0.7.0: mqtt in (QoS 1, JSON,
                         fixed client id, clean session off) -> function -> influxdb out (v2 API,
                         one write per message)      bench/peers/nodered/flow-per-message.json
    nodered-batched      the same with join (500 messages or 1 s) -> influxdb batch
                                                     bench/peers/nodered/flow-batched.json
    mqtt2influxdb        mqtt2influxdb 2.0.6 from PyPI (bench/peers/mqtt2influxdb.yaml); it has
                         no client id or session setting (paho's random id, clean session)

Modes:

    live    the consumer is connected, then the harness publishes the stream at full
            speed; the clock runs from the first publish
    drain   the consumer connects once (so the broker holds its session) and leaves,
            the stream is published, then the consumer starts again; the clock and the
            CPU count start when its MQTT session is up (startup is not counted)
    kill    (--kill) as live, but the consumer's process group is killed with SIGKILL
            when 40 % of the stream is published, and started again at once

The clock stops when every message is in the store, or at the last change of
the store's count once it has not changed for --idle-s seconds (30; kill mode
always waits for that; Node-RED's per-message flow was seen to stall for over
10 s and then finish, while its InfluxDB client retried failed writes). "msg/s" is distinct messages in VictoriaMetrics
divided by that time. Lost and doubled come from VictoriaMetrics' export of
the `<stream>_seq` series: a message is lost when no point carries its
(device, seq), doubled once for each further point with its (device, seq) at
another timestamp. VictoriaMetrics keeps one point per series and timestamp,
so a consumer that stamps the device's `ts` (the gateway, both Node-RED
flows) writes a redelivery onto the same point, and one that stamps arrival
time (mqtt2influxdb) writes a second point.

    .venv/bin/python bench/compare.py --messages 200000 --repeats 3 --mode both --kill
    .venv/bin/python bench/compare.py --messages 20000 --repeats 1 --only gateway,nodered-batched --no-record

The gateway here takes its settings from `Gateway` below only: like every test's gateway
(devtools/localservices.py, `LocalGateway`), it drops the caller's `ELDERCARE_*` variables, so
setting one in the shell changes nothing. To try another setting, change it in that dict.

What the script installs when missing (neither is a project dependency):

    npm ci --prefix bench/peers/nodered          Node-RED and the influxdb nodes, from the committed lockfile,
                                                 into bench/peers/nodered/node_modules (git-ignored)
    python3 -m venv var/peers/mqtt2influxdb && var/peers/mqtt2influxdb/bin/pip install mqtt2influxdb==2.0.6

SOS latency through Node-RED (issue 12, item 2) is measured by bench/sos_latency.py
(--consumer nodered), with bench/peers/nodered/flow-sos.json: this harness's NodeRed
consumer runs it, the batched telemetry flow plus mqtt in (eldercare/watch/+/sos) ->
function -> http request to the Twilio stand-in.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.charts import pyplot, save
from bench.ingest import messages, publish_acknowledged
from bench.procs import Usage, kill_group, say, stop_group
from bench.report import record
from devtools.localservices import LocalGateway, LocalMosquitto, LocalVictoriaMetrics, free_port

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "bench" / "peers"
NODERED = PEERS / "nodered"
M2I_VENV = REPO / "var" / "peers" / "mqtt2influxdb"
M2I_VERSION = "2.0.6"
CHART = REPO / "docs" / "bench" / "peers.png"
SEQ_SERIES = '{__name__=~"(location|health|status)_seq"}'
CONSUMERS = ("bare", "gateway", "nodered-per-message", "nodered-batched", "mqtt2influxdb")
LABELS = {
    "bare": "bare paho subscriber (count only, stores nothing)",
    "gateway": "this gateway (validate, dedup, VictoriaMetrics + SQLite, alert rules)",
    "nodered-per-message": "Node-RED 4.1.8, influxdb out per message",
    "nodered-batched": "Node-RED 4.1.8, join 500 / 1 s -> influxdb batch",
    "mqtt2influxdb": f"mqtt2influxdb {M2I_VERSION}",
}
KILL_AT = 0.4
# ---- counting what reached the store -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tally:
    published: int
    stored: int        # distinct (device, seq) with at least one point
    lost: int          # published, no point
    doubled: int       # further points for a (device, seq) that already has one, at other timestamps
    unknown: int       # points whose (device, seq) was never published


def expected_seqs(stream: Iterable[tuple[str, bytes]]) -> dict[str, int]:
    """device id -> highest seq published (bench.ingest.messages numbers each device's messages 1, 2, 3, ...)."""
    top: dict[str, int] = {}
    for topic, payload in stream:
        device = topic.split("/")[2]
        top[device] = max(top.get(device, 0), orjson.loads(payload)["seq"])
    return top


def tally(expected: Mapping[str, int], points: Iterable[tuple[str, str, int, float]]) -> Tally:
    """Lost and doubled messages from the store's points: (series name, device id, timestamp, seq value)."""
    seen: dict[tuple[str, int], set[tuple[str, int]]] = defaultdict(set)
    unknown = 0
    for series, device, ts, value in points:
        seq = round(value)
        if not 1 <= seq <= expected.get(device, 0):
            unknown += 1
            continue
        seen[device, seq].add((series, ts))   # one point per series and timestamp, as the store keeps it
    published = sum(expected.values())
    return Tally(published, len(seen), published - len(seen), sum(len(p) - 1 for p in seen.values()), unknown)


# ---- VictoriaMetrics -----------------------------------------------------------------------------------------------

def _get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


def vm_reset(tsdb: LocalVictoriaMetrics) -> None:
    """An empty store on the same port: stop, remove the data, start."""
    tsdb.stop()
    shutil.rmtree(tsdb.workdir / "data", ignore_errors=True)
    tsdb.start()


def vm_points(tsdb: LocalVictoriaMetrics) -> list[tuple[str, str, int, float]]:
    tsdb.flush()
    q = urllib.parse.urlencode({"match[]": SEQ_SERIES, "start": "0"})
    points = []
    for line in _get(f"{tsdb.url}/api/v1/export?{q}", timeout=120).splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        name, device = row["metric"]["__name__"], row["metric"].get("device_id", "")
        points += [(name, device, ts, v) for ts, v in zip(row["timestamps"], row["values"], strict=True)]
    return points


def vm_count(tsdb: LocalVictoriaMetrics) -> int:
    """Points of the seq series now visible (one per series and timestamp); a progress gauge, not the tally."""
    tsdb.flush()
    q = urllib.parse.urlencode({"query": f"sum(count_over_time({SEQ_SERIES}[30d]))", "nocache": "1"})
    result = orjson.loads(_get(f"{tsdb.url}/api/v1/query?{q}"))["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


# ---- MQTT: publishing the stream, ending sessions ------------------------------------------------------------------

def _client(creds, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(creds.username, creds.password)
    return c


def publish(broker: LocalMosquitto, stream: list[tuple[str, bytes]], at_fraction: float = 2.0,
            then: Callable[[], None] | None = None) -> float:
    """Publish the stream at QoS 1 as fast as the broker acknowledges; calls `then` once `at_fraction` of it is out.
    Returns the seconds it took."""
    c = _client(broker.simulator, "bench-publisher")
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    elapsed = publish_acknowledged(c, stream, int(len(stream) * at_fraction), then)
    c.disconnect()
    c.loop_stop()
    return elapsed


def end_session(broker: LocalMosquitto, client_id: str) -> None:
    """Connect with the client id and a clean start, so the broker forgets that session and its queue."""
    c = _client(broker.gateway, client_id)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", broker.port, clean_start=True)
    c.loop_start()
    connected.wait(10)
    c.disconnect()
    c.loop_stop()


# ---- consumers -----------------------------------------------------------------------------------------------------

def _wait_for_log(path: Path, offset: int, needles: tuple[str, ...], proc: subprocess.Popen[bytes],
                  what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_bytes()[offset:].decode(errors="replace") if path.exists() else ""
        if all(n in text for n in needles):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_group(proc)
            raise RuntimeError(f"{what} did not come up; its log ends:\n{text[-3000:]}")
        time.sleep(0.05)


@dataclass
class Context:
    broker: LocalMosquitto
    tsdb: LocalVictoriaMetrics
    work: Path
    total: int


class Consumer:
    """One consumer process; `start` returns once its MQTT subscription is up."""

    name = ""
    persistent = True                 # keeps a session (and its queue) across restarts
    writes_store = True
    client_ids: tuple[str, ...] = ()  # sessions to end after the run
    stop_timeout_s = 20.0

    def __init__(self, ctx: Context, workdir: Path) -> None:
        self.ctx, self.workdir = ctx, workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / f"{self.name}.log"

    def start(self, on_spawn: Callable[[int], None]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        stop_group(self.proc, self.stop_timeout_s)

    def kill(self) -> None:
        kill_group(self.proc)

    def _spawn(self, argv: list[str], env: dict[str, str], on_spawn: Callable[[int], None], cwd: Path = REPO) -> int:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        on_spawn(self.proc.pid)
        return offset


class Bare(Consumer):
    name = "bare"
    writes_store = False
    client_ids = ("bench-bare",)
    stop_timeout_s = 10.0

    def start(self, on_spawn: Callable[[int], None]) -> None:
        b = self.ctx.broker
        self.received, self.last_at, self.done = 0, 0.0, threading.Event()
        ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, str(PEERS / "bare_subscriber.py"), "--port", str(b.port), "--username", b.gateway.username,
             "--password", b.gateway.password, "--count", str(self.ctx.total), "--unsubscribe-when-done"],
            cwd=REPO, stdout=subprocess.PIPE, start_new_session=True)
        on_spawn(self.proc.pid)

        def read(out) -> None:
            for raw in out:
                word, *rest = raw.decode().split()
                if word == "ready":
                    ready.set()
                elif word == "progress":
                    self.received = int(rest[0])
                elif word == "done":
                    self.received, self.last_at = int(rest[0]), float(rest[1])
                    self.done.set()

        threading.Thread(target=read, args=(self.proc.stdout,), daemon=True).start()
        if not ready.wait(30):
            kill_group(self.proc)
            raise RuntimeError("bare subscriber did not subscribe")


class Gateway(Consumer):
    name = "gateway"
    client_ids = ("bench-gw-telemetry", "bench-gw-critical")

    def __init__(self, ctx: Context, workdir: Path) -> None:
        super().__init__(ctx, workdir)
        b, t, w = ctx.broker, ctx.tsdb, workdir
        self.service = LocalGateway(workdir, {
            "instance": "bench",
            "mqtt": {"port": b.port, "password": b.gateway.password, "client_id": "bench-gw"},
            "sink": {"url": t.url, "spool_dir": w / "spool"},
            "store": {"path": w / "gateway.db"},
            "ingest": {"auto_register": True},
            "alerts": {"db_path": w / "alerts.db", "dry_run_log": w / "notifications.jsonl",
                       "community_file": REPO / "examples" / "community.toml"},
            "web": {"port": free_port()},
        })

    def start(self, on_spawn: Callable[[int], None]) -> None:
        # LocalGateway.start spawns and waits for both sessions; the sampler picks the group up on its next round.
        self.service.start(timeout_s=90)
        self.proc = self.service.proc
        assert self.proc is not None
        on_spawn(self.proc.pid)


class NodeRed(Consumer):
    client_ids = ("bench-nodered",)
    stop_timeout_s = 15.0

    def __init__(self, ctx: Context, workdir: Path, flow: str, env: Mapping[str, str] | None = None) -> None:
        self.name = f"nodered-{flow}"
        self.flow = NODERED / f"flow-{flow}.json"
        self.env = dict(env or {})   # more ${...} and env.get() values for the flow (bench/sos_latency.py: Twilio's)
        super().__init__(ctx, workdir)

    def start(self, on_spawn: Callable[[int], None]) -> None:
        user_dir = self.workdir / "userdir"
        user_dir.mkdir(exist_ok=True)
        flow = json.loads(self.flow.read_text())
        (user_dir / "flows.json").write_text(json.dumps(flow))
        creds = {n["id"]: {"user": self.ctx.broker.gateway.username, "password": self.ctx.broker.gateway.password}
                 for n in flow if n["type"] == "mqtt-broker"}
        creds |= {n["id"]: {"token": "bench"} for n in flow if n["type"] == "influxdb"}
        (user_dir / "flows_cred.json").write_text(json.dumps(creds))   # credentialSecret false: read as plain JSON
        env = {"NODE_RED_PORT": str(free_port()), "MQTT_PORT": str(self.ctx.broker.port),
               "MQTT_CLIENT_ID": "bench-nodered", "VM_URL": self.ctx.tsdb.url} | self.env
        offset = self._spawn(["node", str(NODERED / "node_modules" / "node-red" / "red.js"), "--settings",
                              str(NODERED / "settings.js"), "--userDir", str(user_dir), "flows.json"], env, on_spawn,
                             cwd=NODERED)
        assert self.proc is not None
        _wait_for_log(self.log, offset, ("Connected to broker",), self.proc, self.name)


class Mqtt2Influx(Consumer):
    name = "mqtt2influxdb"
    persistent = False
    stop_timeout_s = 3.0   # it does not leave on SIGTERM

    def start(self, on_spawn: Callable[[int], None]) -> None:
        b = self.ctx.broker
        env = {"MQTT_PORT": str(b.port), "MQTT_USER": b.gateway.username, "MQTT_PASSWORD": b.gateway.password,
               "VM_PORT": str(self.ctx.tsdb.port)}
        offset = self._spawn([str(M2I_VENV / "bin" / "mqtt2influxdb"), "-c", str(PEERS / "mqtt2influxdb.yaml")],
                             env, on_spawn)
        assert self.proc is not None
        _wait_for_log(self.log, offset, ("Subscribing to: eldercare/watch/+/status",), self.proc, self.name)


def make_consumer(name: str, ctx: Context, workdir: Path) -> Consumer:
    if name == "bare":
        return Bare(ctx, workdir)
    if name == "gateway":
        return Gateway(ctx, workdir)
    if name.startswith("nodered-"):
        return NodeRed(ctx, workdir, name.removeprefix("nodered-"))
    if name == "mqtt2influxdb":
        return Mqtt2Influx(ctx, workdir)
    raise ValueError(name)


# ---- one measured run ----------------------------------------------------------------------------------------------

@dataclass
class Result:
    consumer: str
    mode: str
    rate: float          # distinct messages stored (bare: received) per second
    seconds: float
    cpu_s: float
    rss_mib: float
    stored: int
    lost: int | None     # None: the consumer stores nothing
    doubled: int | None
    capped: bool = False
    notes: list[str] = field(default_factory=list)


def run_one(ctx: Context, stream: list[tuple[str, bytes]], expected: Mapping[str, int], name: str, mode: str,
            idle_s: float, max_s: float, keep_logs: Path | None = None) -> Result:
    vm_reset(ctx.tsdb)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{mode}-", dir=ctx.work))
    consumer = make_consumer(name, ctx, workdir)
    usage = Usage()
    total = len(stream)
    pub: dict[str, float] = {}
    killed = threading.Event()
    restart_s = 0.0
    try:
        if mode == "drain":
            consumer.start(lambda pid: None)
            time.sleep(1)
            consumer.stop()
            say(f"  {name}: publishing the backlog of {total:,}")
            publish(ctx.broker, stream)
            consumer.start(usage.watch)
            t0, cpu0 = time.monotonic(), usage.cpu_s()
            pub_end = t0
        else:
            consumer.start(usage.watch)
            time.sleep(1)
            t0, cpu0 = time.monotonic(), usage.cpu_s()
            pub_done = threading.Event()

            def publisher() -> None:
                pub["s"] = publish(ctx.broker, stream, KILL_AT if mode == "kill" else 2.0, killed.set)
                pub_done.set()

            threading.Thread(target=publisher, daemon=True).start()
            if mode == "kill":
                if not killed.wait(max_s):
                    raise RuntimeError("publisher never reached the kill point")
                consumer.kill()
                say(f"  {name}: killed (SIGKILL) at {KILL_AT:.0%} of the stream, starting it again")
                r0 = time.monotonic()
                consumer.start(usage.watch)
                restart_s = time.monotonic() - r0
            if not pub_done.wait(max_s):
                raise RuntimeError("publisher did not finish")
            pub_end = time.monotonic()

        # Wait for the end: everything stored, or no change for idle_s after the publisher finished.
        last_n, last_change, capped, stall = -1, t0, False, 0.0
        while True:
            if isinstance(consumer, Bare):   # it ends itself: all received, or idle for 10 s
                if consumer.done.wait(0.25):
                    end = consumer.last_at if consumer.received else time.monotonic()
                    break
                if time.monotonic() - t0 > max_s:
                    end, capped = time.monotonic(), True
                    break
                continue
            n = vm_count(ctx.tsdb)
            now = time.monotonic()
            if n != last_n:
                if last_n > 0:
                    stall = max(stall, now - last_change)
                last_n, last_change = n, now
            if mode != "kill" and n >= total:
                end = now
                break
            if now - max(last_change, pub_end) > idle_s:
                end = last_change
                break
            if now - t0 > max_s:
                end, capped = now, True
                break
            time.sleep(0.25)
        cpu = usage.cpu_s() - cpu0
    finally:
        consumer.stop()
        usage.close()
        for client_id in consumer.client_ids:
            end_session(ctx.broker, client_id)
        if keep_logs is not None and consumer.log.exists():
            keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(consumer.log, keep_logs / f"{workdir.name}.log")
    seconds = max(end - t0, 1e-3)
    notes = []
    if mode == "kill":
        notes.append(f"restart took {restart_s:.1f} s")
    if capped:
        notes.append(f"stopped after {max_s:.0f} s")
    if stall > 5:
        notes.append(f"store stalled up to {stall:.0f} s")
    if consumer.log.exists():
        errors = sum(1 for line in consumer.log.read_text(errors="replace").splitlines()
                     if "[error]" in line or " ERROR: " in line)
        if errors:
            notes.append(f"{errors:,} errors logged")
    if isinstance(consumer, Bare):
        return Result(name, mode, consumer.received / seconds, seconds, cpu, usage.peak_rss / 2**20, consumer.received,
                      None, None, capped, notes)
    t = tally(expected, vm_points(ctx.tsdb))
    if t.unknown:
        notes.append(f"{t.unknown} points with an unpublished seq")
    if mode == "drain" and not consumer.persistent and t.stored == 0:
        notes.append("clean session: the broker kept no backlog for it")
    # Stopped before it finished: what it had not written yet is not a loss it would have had.
    lost = None if capped else t.lost
    return Result(name, mode, t.stored / seconds, seconds, cpu, usage.peak_rss / 2**20, t.stored, lost, t.doubled,
                  capped, notes)


# ---- setup of the peers --------------------------------------------------------------------------------------------

def ensure_nodered() -> None:
    if not (NODERED / "node_modules" / "node-red" / "red.js").exists():
        say("installing Node-RED from bench/peers/nodered/package-lock.json (npm ci)")
        subprocess.run(["npm", "ci", "--prefix", str(NODERED), "--no-audit", "--no-fund"], check=True, timeout=900)


def ensure_mqtt2influxdb() -> None:
    if not (M2I_VENV / "bin" / "mqtt2influxdb").exists():
        say(f"installing mqtt2influxdb {M2I_VERSION} into {M2I_VENV}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(M2I_VENV)], check=True, timeout=300)
        subprocess.run([str(M2I_VENV / "bin" / "pip"), "install", "-q", f"mqtt2influxdb=={M2I_VERSION}"], check=True,
                       timeout=900)


# ---- output --------------------------------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(results: list[Result]) -> dict[tuple[str, str], dict[str, object]]:
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        groups[r.consumer, r.mode].append(r)
    out: dict[tuple[str, str], dict[str, object]] = {}
    for key, rs in groups.items():
        out[key] = {
            "rate": _median([r.rate for r in rs]),
            "cpu_s": _median([r.cpu_s for r in rs]),
            "us_per_msg": _median([r.cpu_s / r.stored * 1e6 for r in rs if r.stored] or [float("nan")]),
            "rss_mib": _median([r.rss_mib for r in rs]),
            "lost": None if all(r.lost is None for r in rs) else [r.lost for r in rs],
            "doubled": None if rs[0].doubled is None else [r.doubled for r in rs],
            "capped": any(r.capped for r in rs),
            "notes": sorted({n for r in rs for n in r.notes}),
        }
    return out


def _runs(values: object) -> str:
    if values is None:
        return "n/a"
    assert isinstance(values, list)
    return " / ".join("n/a" if v is None else f"{v:,}" for v in values)


def _us(value: object) -> str:
    return "n/a" if not isinstance(value, float) or value != value else f"{value:,.0f}"


def table(summary: Mapping[tuple[str, str], Mapping[str, object]], mode: str, names: list[str]) -> str:
    rows = ["| consumer | msg/s into the store | CPU s | CPU µs per message | peak RSS MiB | lost | doubled | notes |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in names:
        s = summary.get((name, mode))
        if s is None:
            continue
        notes = list(s["notes"])  # type: ignore[call-overload]
        rows.append(f"| {LABELS[name]} | {s['rate']:,.0f} | {s['cpu_s']:.1f} | {_us(s['us_per_msg'])} | "
                    f"{s['rss_mib']:,.0f} | {_runs(s['lost'])} | {_runs(s['doubled'])} | {'; '.join(notes)} |")
    return "\n".join(rows)


def chart(summary: Mapping[tuple[str, str], Mapping[str, object]], modes: list[str], names: list[str],
          title: str) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    shown = [m for m in modes if m != "kill"]
    killed = [n for n in names if summary.get((n, "kill"), {}).get("lost") is not None]
    if killed:
        fig, (ax, kx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
        # Summed over the runs: a loss in one run of three is what matters, and a median would hide it.
        lost = [sum(v for v in summary[n, "kill"]["lost"] if v is not None)  # type: ignore[union-attr]
                for n in killed]
        bars = kx.bar(range(len(killed)), lost, color="tab:red")
        kx.bar_label(bars, labels=[f"{v:,.0f}" for v in lost], fontsize=7)
        kx.set_xticks(range(len(killed)), killed, fontsize=8, rotation=15)
        kx.set_ylim(0, max(10, max(lost) * 1.15))
        kx.set_ylabel("messages lost, all runs together")
        kx.set_title(f"lost through a SIGKILL at {KILL_AT:.0%} of a live stream", fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(shown), 1)
    for i, mode in enumerate(shown):
        ys = [float(summary.get((n, mode), {}).get("rate", 0.0)) for n in names]  # type: ignore[arg-type]
        bars = ax.bar([x + i * width for x in range(len(names))], ys, width, label=mode)
        ax.bar_label(bars, labels=[f"{y / 1000:.1f}k" if y >= 1000 else f"{y:.0f}" for y in ys], fontsize=7)
    ax.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(names))], names, fontsize=8)
    ax.set_ylabel("messages/s into VictoriaMetrics (bare: received)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    save(plt, fig, CHART)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="consumers: " + ", ".join(CONSUMERS))
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each consumer and mode; the tables show medians")
    ap.add_argument("--only", default="", help="comma-separated consumers (default: all)")
    ap.add_argument("--mode", choices=("live", "drain", "both"), default="both")
    ap.add_argument("--kill", action="store_true", help="also: kill -9 each consumer at 40 %% of a live stream")
    ap.add_argument("--idle-s", type=float, default=30.0,
                    help="a consumer is done when the store has not changed this long (Node-RED's per-message flow "
                         "stalls for over 10 s while its client retries failed writes)")
    ap.add_argument("--max-s", type=float, default=900.0, help="stop waiting for one consumer after this long")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy each consumer's log into this directory")
    ap.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md and the chart alone")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CONSUMERS)
    unknown = sorted(set(names) - set(CONSUMERS))
    if unknown:
        ap.error(f"unknown consumer(s) {', '.join(unknown)}; known: {', '.join(CONSUMERS)}")
    modes = ["live", "drain"] if args.mode == "both" else [args.mode]
    if args.kill:
        modes.append("kill")
    if any(n.startswith("nodered-") for n in names):
        ensure_nodered()
    if "mqtt2influxdb" in names:
        ensure_mqtt2influxdb()

    stream = list(messages(args.messages, args.devices))
    expected = expected_seqs(stream)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        work = Path(tmp)
        with LocalMosquitto(work / "mosquitto") as broker, LocalVictoriaMetrics(work / "vm") as tsdb:
            ctx = Context(broker, tsdb, work, len(stream))
            for rep in range(args.repeats):
                for mode in modes:
                    for name in names:
                        if mode == "kill" and name == "bare":
                            continue   # it stores nothing, so there is nothing to count after a crash
                        say(f"repeat {rep + 1}/{args.repeats}, {mode}: {name}")
                        r = run_one(ctx, stream, expected, name, mode, args.idle_s, args.max_s, args.keep_logs)
                        results.append(r)
                        lost = "" if r.doubled is None else f", lost {_runs([r.lost])}, doubled {r.doubled:,}"
                        say(f"  {name} {mode}: {r.rate:,.0f} msg/s over {r.seconds:.1f} s, CPU {r.cpu_s:.1f} s, "
                            f"peak RSS {r.rss_mib:,.0f} MiB, stored {r.stored:,}{lost} {'; '.join(r.notes)}")

    summary = summarize(results)
    headings = {"live": "Live: the consumer connected, the stream published at full speed",
                "drain": "Drain: the broker holds the whole stream, then the consumer connects",
                "kill": f"Kill: live, and the consumer is killed with SIGKILL at {KILL_AT:.0%} of the stream and "
                        "started again"}
    sections = [f"### {headings[m]}\n\n{table(summary, m, names)}" for m in modes]
    print("\n\n".join(sections))
    if args.no_record:
        return

    def rate(name: str, mode: str) -> float | None:
        s = summary.get((name, mode))
        return float(s["rate"]) if s else None  # type: ignore[arg-type]

    rows = [("messages per run (QoS 1, one stream for all)", f"{args.messages:,} from {args.devices:,} devices"),
            ("repetitions (tables show medians; lost/doubled per run)", f"{args.repeats}")]
    for mode in [m for m in modes if m != "kill"]:
        gw = rate("gateway", mode)
        for peer, what in (("nodered-batched", "Node-RED batched flow (target >= 1.0)"),
                           ("bare", "bare paho subscriber (target >= 0.9)")):
            other = rate(peer, mode)
            if gw and other:
                rows.append((f"{mode}: gateway / {what}", f"{gw / other:.2f}"))
    drawn = chart(summary, modes, names, f"{args.messages:,} QoS 1 messages, medians of {args.repeats}")
    command = (f".venv/bin/python bench/compare.py --messages {args.messages} --repeats {args.repeats} "
               f"--mode {args.mode}" + (" --kill" if args.kill else "") + (f" --only {args.only}" if args.only else ""))
    record("Against the peers", command, rows, notes="\n\n".join(
        sections
        + ([f"![messages/s per consumer]({CHART.relative_to(REPO)})"] if drawn else [])
        + ["Each consumer is its own process group; CPU is user + system time of every process in it while the clock "
           "runs, peak RSS the largest sum over the group sampled every 0.2 s. Lost and doubled are counted in "
           "VictoriaMetrics by (device, seq). The bare subscriber stores nothing: its figure is messages received. "
           "See the docstring of bench/compare.py for the modes and what each peer is."]))


if __name__ == "__main__":
    main()
