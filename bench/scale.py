"""Scale: the gateway with 10k, 100k and 1M registered watches, at a city's rate, and draining a restart's backlog.

Each size (--devices) gets its own Mosquitto, VictoriaMetrics and gateway
database on loopback. The N watches (`load-000000` ...) are registered in
one transaction, then the gateway starts as its own process
(`python -m eldercare run`, alert engine inside, telemetry received in its
child process). Measured for each size:

    startup      from spawning the process to both MQTT lanes connected (LocalGateway.start)
    RSS          of the whole process group (the gateway and its child), summed from /proc
    field load   --field-s seconds of the load-mode simulator at the field's cadence for N watches
                 (a position every 5 min, health every 10, status every 15: 11 messages per watch per
                 30 min, 6,111 msg/s for a million); CPU share of one core and RSS sampled every
                 second, the gateway's lag from its /metrics, and the RSS it gained per device heard

For the largest size, after that:

    city         --city-rate msg/s from the N watches for --city-minutes; CPU share, lag, RSS
    backlog      the gateway is stopped, --backlog-minutes of city traffic is published while it is
                 down (the broker queues it for the gateway's persistent session), and the gateway
                 is started again: drain time runs from the spawn until it has received the whole
                 backlog with nothing left in its inbox

Lag is the gateway's own: from a batch's first message arriving to its
acknowledgement to the broker (`eldercare_lane_lag_seconds`, sampled each
second, and the `eldercare_ingest_ack_delay_seconds` histogram). What waits
in the broker is not in it, so each load phase also times the catch-up:
from the simulator's last PUBACK until the gateway has received every
message the broker acknowledged.

    .venv/bin/python bench/scale.py --devices 10000,100000,1000000 --city-rate 5000 --city-minutes 10 \\
        --backlog-minutes 10
    .venv/bin/python bench/scale.py --devices 10000 --city-rate 1000 --city-minutes 1 --backlog-minutes 1 --no-record
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.charts import pyplot, save
from bench.procs import Usage, say, stop_group
from bench.report import record
from bench.sos_latency import percentile
from device_sim.load import FIELD_CADENCE_S, LoadReport, cadence_mix, cadence_rate, device_id, load_payload, run_load
from devtools.localservices import LocalGateway, LocalMosquitto, LocalVictoriaMetrics, free_port
from gateway.decode import decode
from gateway.lineprotocol import to_line
from gateway.models import DeviceKind, DeviceMessage
from gateway.store import OperationalStore
from gateway.topics import Topics

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "docs" / "bench" / "scale.png"
MIX = cadence_mix(FIELD_CADENCE_S)
MIB = 2**20
IDLE_S = 5.0            # seconds of nothing coming in after startup, for the idle CPU share
LOAD_GRACE_S = 60.0     # beyond its duration, how long a load run may take before it is stopped; also the catch-up
TARGET_MINUTES = 10     # the city run and backlog
METRIC = re.compile(r'^(eldercare_[a-z_]+)\{([^}]*)\} (\S+)$')


# ---- what the gateway says about itself -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Metrics:
    received: int                       # messages taken in, every lane
    inbox: int                          # received and not yet in a batch, every lane
    lag_s: float                        # the last batch's arrival-to-acknowledgement time, worst lane
    ack_buckets: dict[float, float]     # telemetry ack delay histogram: upper bound -> batches at or under it
    stages: dict[str, float] = field(default_factory=dict)   # telemetry lane: seconds spent so far in each step


def parse_metrics(text: str) -> Metrics:
    received = inbox = 0.0
    lag = 0.0
    buckets: dict[float, float] = {}
    stages: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2), float(m.group(3))
        if name == "eldercare_messages_total" and 'outcome="received"' in labels:
            received += value
        elif name == "eldercare_lane_inbox_messages":
            inbox += value
        elif name == "eldercare_lane_lag_seconds":
            lag = max(lag, value)
        elif name == "eldercare_ingest_ack_delay_seconds_bucket" and 'lane="telemetry"' in labels:
            le = re.search(r'le="([^"]+)"', labels)
            if le:
                buckets[float(le.group(1))] = value
        elif name == "eldercare_ingest_stage_seconds_total" and 'lane="telemetry"' in labels:
            stage = re.search(r'stage="([^"]+)"', labels)
            if stage:
                stages[stage.group(1)] = value
    return Metrics(int(received), int(inbox), lag, buckets, stages)


def stage_shares(samples: list[Sample], slow_lag_s: float | None = None) -> dict[str, float]:
    """The telemetry lane's mean share of a second in each step, over consecutive samples; with `slow_lag_s`,
    only over the seconds whose lag reached it."""
    totals: dict[str, float] = {}
    seconds = 0.0
    for a, b in itertools.pairwise(samples):
        if slow_lag_s is not None and b.m.lag_s < slow_lag_s:
            continue
        seconds += b.t - a.t
        for stage, spent in b.m.stages.items():
            totals[stage] = totals.get(stage, 0.0) + spent - a.m.stages.get(stage, 0.0)
    return {stage: spent / seconds for stage, spent in totals.items()} if seconds > 0 else {}


def shares_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{stage} {share:.0%}" for stage, share in shares.items()) or "n/a"



def bucket_percentile(before: dict[float, float], after: dict[float, float], p: float) -> float | None:
    """The smallest histogram bound under which `p` % of the batches observed between two scrapes fall."""
    bounds = sorted(after)
    if not bounds:
        return None
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= total * p / 100:
            return bound
    return bounds[-1]


# ---- one gateway process, watched ------------------------------------------------------------------------------------

@dataclass
class Sample:
    t: float            # s since the phase began
    cpu_share: float    # of one core, over the interval before
    rss: int
    m: Metrics
    others: dict[str, float]    # the broker's and the time-series store's CPU shares, over the same interval


@dataclass
class Phase:
    name: str
    samples: list[Sample]
    load: LoadReport | None
    cpu_share: float            # while the load ran
    peak_rss: int
    final_rss: int
    load_end: float             # monotonic: the load's last PUBACK (without a load: when sampling began)
    done_at: float | None       # monotonic: the gateway had received all of it (None: not within the bound)
    lag_p99_bucket_s: float | None
    received_rate: float        # messages/s the gateway received while the load ran
    received: int               # messages the gateway received in the phase
    others_share: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def catch_up_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.load_end

    @property
    def lags(self) -> list[float]:
        return [s.m.lag_s for s in self.samples]


class WatchedGateway:
    def __init__(self, work: Path, broker: LocalMosquitto, tsdb: LocalVictoriaMetrics) -> None:
        self.web_port = free_port()
        self.usage = Usage()
        self.others: dict[str, Usage] = {}
        for name, service in (("broker", broker), ("VictoriaMetrics", tsdb)):
            assert service.proc is not None
            self.others[name] = Usage()
            self.others[name].watch(service.proc.pid)
        self.service = LocalGateway(work / "gateway", {
            "instance": "scale",
            "mqtt": {"port": broker.port, "password": broker.gateway.password, "client_id": "scale-gw"},
            "sink": {"url": tsdb.url, "spool_dir": work / "spool"},
            "store": {"path": work / "gateway.db"},
            "alerts": {"db_path": work / "alerts.db", "dry_run_log": work / "notifications.jsonl",
                       "community_file": REPO / "examples" / "community.toml"},
            "web": {"port": self.web_port},
        })

    def start(self) -> float:
        """Spawn it; seconds until both MQTT lanes are connected."""
        t0 = time.monotonic()
        self.service.start(timeout_s=900)
        took = time.monotonic() - t0
        assert self.service.proc is not None
        self.usage.watch(self.service.proc.pid)
        return took

    def stop(self) -> None:
        stop_group(self.service.proc, LocalGateway.stop_timeout_s)

    def close(self) -> None:
        self.stop()
        for usage in (self.usage, *self.others.values()):
            usage.close()

    def metrics(self) -> Metrics:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=10) as r:
                    return parse_metrics(r.read().decode())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run(self, name: str, load: Callable[[], LoadReport] | None, bound_s: float, done: Callable[[Metrics], bool],
            catch_up_max_s: float = LOAD_GRACE_S, idle_s: float = 0.0) -> Phase:
        """Sample every second while `load` runs (in a thread) and then until `done` (the gateway caught up), each
        bounded: the load by `bound_s`, the catch-up by `catch_up_max_s` and (`idle_s` > 0) by the received count
        standing still that long."""
        result: dict[str, LoadReport] = {}
        thread = None
        if load is not None:
            thread = threading.Thread(target=lambda: result.setdefault("report", load()), daemon=True)
            thread.start()
        samples: list[Sample] = []
        t0 = time.monotonic()
        first = self.metrics()
        last_t, last_cpu = t0, self.usage.cpu_s()
        last_others = {k: u.cpu_s() for k, u in self.others.items()}
        self.usage.peak_rss = self.usage.rss

        def sample() -> Metrics:
            nonlocal last_t, last_cpu, last_others
            m = self.metrics()
            now, cpu = time.monotonic(), self.usage.cpu_s()
            others = {k: u.cpu_s() for k, u in self.others.items()}
            dt = max(now - last_t, 1e-6)
            samples.append(Sample(now - t0, (cpu - last_cpu) / dt, self.usage.rss, m,
                                  {k: (v - last_others[k]) / dt for k, v in others.items()}))
            last_t, last_cpu, last_others = now, cpu, others
            return m

        def show(m: Metrics) -> None:
            x = samples[-1]
            others = "  ".join(f"{k} {v:5.0%}" for k, v in x.others.items())
            steps = shares_text(stage_shares(samples[-2:]))
            say(f"  {name}: {x.t:5.0f} s  received {m.received:>10,}  inbox {m.inbox:>7,}  lag {m.lag_s:6.2f} s  "
                f"CPU {x.cpu_share:5.0%}  RSS {x.rss / MIB:6,.0f} MiB  ({others})  [{steps}]")

        while thread is not None and thread.is_alive() and time.monotonic() - t0 < bound_s:
            time.sleep(1)
            show(sample())
        loaded = len(samples)
        load_end = time.monotonic()
        notes = []
        stopped = thread is not None and thread.is_alive()
        if stopped:
            # The simulator fell behind: stop its workers (this process's only multiprocessing children).
            for worker in mp.active_children():
                worker.terminate()
            thread.join(15)
            notes.append(f"{name}: the simulator fell behind its rate and was stopped after {bound_s:.0f} s")
            idle_s = idle_s or 10.0
        # A stopped simulator's workers never report what they published: its report would say 0.
        report = None if stopped else result.get("report")
        in_load = [x for x in samples[:loaded] if x.m.received > first.received]
        received_rate = ((in_load[-1].m.received - first.received) / in_load[-1].t) if in_load else 0.0
        # Catch-up: until the gateway has everything, bounded.
        done_at: float | None = None
        still, still_since = -1, time.monotonic()
        while True:
            m = sample()
            now = time.monotonic()
            if done(m):
                done_at = now
                break
            if m.received != still:
                still, still_since = m.received, now
            if (idle_s and now - still_since > idle_s) or now - load_end > catch_up_max_s:
                break
            if load is None:
                show(m)
            time.sleep(1 if load is None else 0.2)
        # CPU share over the seconds the gateway had messages coming in (not the simulator's start-up).
        window = samples[:loaded] if load is not None else samples
        busy = [s for s in window if s.m.received > first.received] or window
        if done_at is None:
            notes.append(f"had received {samples[-1].m.received - first.received:,} of the expected at the end")
        return Phase(name, samples, report, statistics.fmean(s.cpu_share for s in busy) if busy else 0.0,
                     self.usage.peak_rss, samples[-1].rss, load_end, done_at,
                     bucket_percentile(first.ack_buckets, samples[-1].m.ack_buckets, 99), received_rate,
                     samples[-1].m.received - first.received,
                     {k: statistics.fmean(x.others[k] for x in busy) for k in self.others} if busy else {}, notes)


# ---- one size --------------------------------------------------------------------------------------------------------

@dataclass
class SizeResult:
    devices: int
    register_s: float
    startup_s: float
    startup_rss: int
    idle_cpu_share: float       # with nothing coming in, the seconds after startup
    field: Phase
    heard: int
    city: Phase | None = None
    backlog: LoadReport | None = None
    restart_s: float | None = None
    restart_at: float = 0.0     # monotonic: the restart's spawn
    drain: Phase | None = None
    warmed: tuple[int, float] | None = None   # points written to VictoriaMetrics before the gateway started, seconds

    @property
    def drain_s(self) -> float | None:
        """From the restart's spawn until the gateway had received the whole backlog, its inbox empty."""
        done = self.drain.done_at if self.drain else None
        return None if done is None else done - self.restart_at


def load_for(broker: LocalMosquitto, devices: int, rate: float, duration_s: float) -> Callable[[], LoadReport]:
    return lambda: run_load(port=broker.port, username=broker.simulator.username, password=broker.simulator.password,
                            devices=devices, rate=rate, duration=duration_s, processes=1 if rate < 2000 else 2,
                            mix=MIX)


def bounded(load: Callable[[], LoadReport], bound_s: float) -> LoadReport | None:
    """Run the load; if it has not finished within `bound_s`, stop its workers (this process's only
    multiprocessing children) and return None."""
    result: dict[str, LoadReport] = {}
    thread = threading.Thread(target=lambda: result.setdefault("report", load()), daemon=True)
    thread.start()
    thread.join(bound_s)
    if thread.is_alive():
        for worker in mp.active_children():
            worker.terminate()
        thread.join(15)
        return None
    return result.get("report")


def register(path: Path, devices: int) -> float:
    t0 = time.monotonic()
    store = OperationalStore(path)
    try:
        store.register_devices((device_id(i) for i in range(devices)), DeviceKind.WATCH, int(time.time() * 1000))
    finally:
        store.close()
    return time.monotonic() - t0


def warm_series(tsdb: LocalVictoriaMetrics, devices: int, lines_per_post: int = 10_000) -> tuple[int, float]:
    """Write one point of each stream of every watch, a minute back, through the gateway's own decoder and line
    protocol: VictoriaMetrics then knows every series, and has it in its index of the day, as in a city that has
    run for a while. Returns (points, s).

    A store seeing a series for the first time spends several times as long on its point (4.2 ms against 1.5 ms,
    medians for 500 new against 500 known points, measured here), and in a run of a few minutes nearly every watch is
    heard for the first time. VictoriaMetrics also indexes each series once per day (UTC) it has points in, so a
    point a day back would leave every series' first point of today to be indexed during the run; a run that
    crosses midnight UTC measures that too."""
    topics, streams = Topics(), tuple(FIELD_CADENCE_S)
    ts = int(time.time() * 1000) - 60_000
    t0, written, posts, lines = time.monotonic(), 0, 0, []
    for i in range(devices):
        for seq in range(len(streams)):
            stream, body = load_payload(i, seq, ts, streams)
            message = decode(topics, f"{topics.prefix}/watch/{device_id(i)}/{stream}", body)
            assert isinstance(message, DeviceMessage), message
            lines.append(to_line(message))
        if len(lines) >= lines_per_post or i == devices - 1:
            request = urllib.request.Request(f"{tsdb.url}/api/v2/write?precision=ms", data="\n".join(lines).encode(),
                                             method="POST")
            urllib.request.urlopen(request, timeout=120).read()
            written, posts, lines = written + len(lines), posts + 1, []
            if posts % 50 == 0:
                say(f"  {written:,} of {devices * len(streams):,} points")
    return written, time.monotonic() - t0


def received_all(base: int, report_of: Callable[[], LoadReport | None]) -> Callable[[Metrics], bool]:
    def done(m: Metrics) -> bool:
        report = report_of()
        return report is not None and m.received - base >= report.published and m.inbox == 0
    return done


def phase_with_load(gw: WatchedGateway, name: str, broker: LocalMosquitto, devices: int, rate: float,
                    duration_s: float) -> Phase:
    base = gw.metrics().received
    holder: dict[str, LoadReport] = {}
    load = load_for(broker, devices, rate, duration_s)

    def run() -> LoadReport:
        holder["report"] = load()
        return holder["report"]

    say(f"{name}: {rate:,.0f} msg/s from {devices:,} watches for {duration_s:.0f} s")
    return gw.run(name, run, duration_s + LOAD_GRACE_S, received_all(base, lambda: holder.get("report")))


def run_size(devices: int, args: argparse.Namespace, largest: bool) -> SizeResult:
    with tempfile.TemporaryDirectory(prefix=f"bench-scale-{devices}-") as tmp:
        work = Path(tmp)
        with LocalMosquitto(work / "mosquitto") as broker, LocalVictoriaMetrics(work / "vm") as tsdb:
            say(f"{devices:,} watches: registering")
            register_s = register(work / "gateway.db", devices)
            say(f"  registered in {register_s:.1f} s")
            warmed = None
            if not args.cold_tsdb:
                say("  writing one point of each stream of every watch to VictoriaMetrics")
                warmed = warm_series(tsdb, devices)
                say(f"  {warmed[0]:,} points in {warmed[1]:.0f} s")
            say("  starting the gateway")
            gw = WatchedGateway(work, broker, tsdb)
            try:
                startup_s = gw.start()
                time.sleep(1)
                cpu0, t0 = gw.usage.cpu_s(), time.monotonic()
                time.sleep(IDLE_S)
                idle = (gw.usage.cpu_s() - cpu0) / (time.monotonic() - t0)
                startup_rss = gw.usage.rss
                say(f"  up in {startup_s:.1f} s, RSS {startup_rss / MIB:,.0f} MiB, idle CPU {idle:.0%}")
                rate = cadence_rate(devices, FIELD_CADENCE_S)
                fld = phase_with_load(gw, f"field cadence, {devices:,}", broker, devices, rate, args.field_s)
                heard = min(devices, fld.received)
                out = SizeResult(devices, register_s, startup_s, startup_rss, idle, fld, heard, warmed=warmed)
                if largest:
                    out.city = phase_with_load(gw, f"city, {devices:,}", broker, devices, args.city_rate,
                                               args.city_minutes * 60)
                    say("backlog: stopping the gateway")
                    gw.stop()
                    backlog_n = round(args.city_rate * args.backlog_minutes * 60)
                    say(f"backlog: publishing {backlog_n:,} messages ({args.backlog_minutes:g} min at "
                        f"{args.city_rate:,.0f} msg/s) at up to {args.backlog_rate:,.0f} msg/s while it is down")
                    out.backlog = bounded(load_for(broker, devices, args.backlog_rate, backlog_n / args.backlog_rate),
                                          backlog_n / args.backlog_rate + LOAD_GRACE_S)
                    if out.backlog is None:
                        say("  the simulator fell behind and was stopped: the drain waits for the received count to "
                            "stand still")
                    else:
                        say(f"  published {out.backlog.published:,} in {out.backlog.elapsed_s:.0f} s")
                    out.restart_at = time.monotonic()
                    out.restart_s = gw.start()
                    say(f"  up again in {out.restart_s:.1f} s; draining")
                    backlog = out.backlog.published if out.backlog else 2**62
                    out.drain = gw.run("drain", None, 0, lambda m: m.received >= backlog and m.inbox == 0,
                                       catch_up_max_s=args.drain_max_s, idle_s=30)
                    say(f"  drained in {secs(out.drain_s)} from the spawn")
                return out
            finally:
                gw.close()
                if args.keep_logs is not None and gw.service.log_file.exists():
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    shutil.copy(gw.service.log_file, args.keep_logs / f"gateway-{devices}.log")


# ---- output ----------------------------------------------------------------------------------------------------------

def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB"


def secs(s: float | None) -> str:
    return "not within the bound" if s is None else f"{s:.1f} s"


def per_device(delta: float, devices: int) -> str:
    return f"{delta / devices:,.0f} B" if devices else "n/a"


def size_table(results: list[SizeResult]) -> str:
    rows = ["| watches | register (one transaction) | startup | RSS after startup | idle CPU | field rate asked / received | "
            "CPU share | broker / VictoriaMetrics CPU | "
            "peak RSS | RSS gained per device heard | gateway lag max | catch-up after load |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        f = r.field
        asked = cadence_rate(r.devices, FIELD_CADENCE_S)
        rows.append(f"| {r.devices:,} | {r.register_s:.1f} s | {r.startup_s:.1f} s | {mib(r.startup_rss)} | "
                    f"{r.idle_cpu_share:.0%} | "
                    f"{asked:,.0f} / {f.received_rate:,.0f} msg/s | {f.cpu_share:.0%} | {others(f)} | "
                    f"{mib(f.peak_rss)} | "
                    f"{per_device(f.final_rss - r.startup_rss, r.heard)} ({r.heard:,} heard) | "
                    f"{max(f.lags, default=0):.2f} s | {secs(f.catch_up_s)} |")
    return "\n".join(rows)


def others(p: Phase) -> str:
    return " / ".join(f"{v:.0%}" for v in p.others_share.values())


def marginal(results: list[SizeResult]) -> str:
    """RSS after startup per registered device, between the smallest and the largest size."""
    a, b = results[0], results[-1]
    if b.devices == a.devices:
        return "n/a (one size)"
    return f"{(b.startup_rss - a.startup_rss) / (b.devices - a.devices):,.0f} B"


def chart(results: list[SizeResult], city: Phase | None, title: str) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (ax, cx) = plt.subplots(1, 2, figsize=(13, 4.5))
    xs = [r.devices for r in results]
    ax.plot(xs, [r.startup_rss / MIB for r in results], "o-", label="after startup")
    ax.plot(xs, [r.field.peak_rss / MIB for r in results], "s-", label="peak under the field cadence")
    ax.axhline(1024, color="tab:red", linestyle="--", linewidth=1, label="target < 1 GiB")
    ax.set_ylim(bottom=0)
    ax.set_xscale("log")
    ax.set_xlabel("registered watches")
    ax.set_ylabel("gateway RSS, MiB (process and child)")
    ax.set_title("memory against registered watches", fontsize=9)
    ax.legend(fontsize=8)
    if city is not None and city.samples:
        ts = [s.t for s in city.samples]
        cx.plot(ts, [s.cpu_share * 100 for s in city.samples], linewidth=0.8, label="CPU, % of one core (each second)")
        cx.axhline(city.cpu_share * 100, color="tab:blue", linestyle=":", linewidth=1,
                   label=f"mean while loaded {city.cpu_share:.0%}")
        cx.axhline(50, color="tab:red", linestyle="--", linewidth=1, label="target < 50 %")
        lx = cx.twinx()
        lx.plot(ts, city.lags, color="tab:orange", linewidth=0.8, label="gateway lag, s")
        lx.set_ylabel("lag, s")
        lx.set_ylim(bottom=0)
        cx.set_ylim(bottom=0)
        lx.legend(loc="upper right", fontsize=8)
        rate = city.load.requested_rate if city.load else city.received_rate
        cx.set_title(f"city rate: {rate:,.0f} msg/s from {results[-1].devices:,} watches", fontsize=9)
        cx.set_xlabel("s")
        cx.set_ylabel("CPU share, %")
        cx.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    save(plt, fig, CHART)
    return True


def summary_rows(results: list[SizeResult], args: argparse.Namespace) -> list[tuple[str, str]]:
    rows = [(f"{r.devices:,} watches: startup / RSS after startup / peak RSS under the field cadence",
             f"{r.startup_s:.1f} s / {mib(r.startup_rss)} / {mib(r.field.peak_rss)}") for r in results]
    rows.append(("RSS per registered watch (after startup, smallest to largest size)", marginal(results)))
    rows.append(("VictoriaMetrics before the load", "empty (--cold-tsdb): each watch's first point creates its series"
                 if results[-1].warmed is None else "every watch's series written once (" + ", ".join(
                     f"{r.devices:,}: {r.warmed[0]:,} points in {r.warmed[1]:.0f} s" for r in results if r.warmed)
                 + ")"))
    big = results[-1]
    c = big.city
    if c is not None:
        p99 = "n/a" if c.lag_p99_bucket_s is None else f"≤ {c.lag_p99_bucket_s:g} s"
        rows += [
            (f"city: asked / simulator achieved / gateway received, from {big.devices:,} watches for "
             f"{args.city_minutes:g} min", f"{args.city_rate:,.0f} / "
             f"{f'{c.load.achieved_rate:,.0f}' if c.load else 'stopped, fell behind'} / {c.received_rate:,.0f} msg/s"),
            ("city: broker / VictoriaMetrics CPU share of one core", others(c)),
            ("city: gateway CPU share of one core (target < 50 %), mean / p95 of seconds",
             f"{c.cpu_share:.0%} / {percentile([s.cpu_share for s in c.samples], 95):.0%}"),
            ("city: gateway lag p99 / max of 1 s samples (target < 1 s)",
             f"{percentile(c.lags, 99):.2f} s / {max(c.lags, default=0):.2f} s"),
            ("city: p99 of batches' ack delay (histogram bound)", p99),
            ("city: telemetry lane's share of a second by step, all seconds", shares_text(stage_shares(c.samples))),
            ("city: the same, only the seconds whose lag reached 1 s", shares_text(stage_shares(c.samples, 1.0))),
            ("city: catch-up after the last PUBACK", secs(c.catch_up_s)),
            ("city: peak / final RSS (target < 1 GiB)", f"{mib(c.peak_rss)} / {mib(c.final_rss)}"),
        ]
    if big.drain is not None:
        d, b = big.drain, big.backlog
        received = d.samples[-1].m.received if d.samples else 0
        rows += [
            (f"backlog: {args.backlog_minutes:g} min of city traffic queued while the gateway was down",
             f"{b.published:,} messages" if b else "the simulator fell behind and was stopped: count unknown"),
            ("backlog: restart to both lanes connected", secs(big.restart_s)),
            ("backlog: drain, from the spawn until all of it received and the inbox empty", secs(big.drain_s)),
            ("backlog: drain rate (received / drain time)",
             f"{received / big.drain_s:,.0f} msg/s" if big.drain_s else "n/a"),
            ("backlog: gateway lag max while draining", f"{max(d.lags, default=0):.2f} s"),
            ("backlog: CPU share while draining / peak RSS", f"{d.cpu_share:.0%} / {mib(d.peak_rss)}"),
        ]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="10000,100000,1000000", help="comma-separated sizes; the largest gets the "
                    "city run and the backlog")
    ap.add_argument("--field-s", type=float, default=60.0, help="seconds of load at the field's cadence per size")
    ap.add_argument("--city-rate", type=float, default=5000.0)
    ap.add_argument("--city-minutes", type=float, default=10.0)
    ap.add_argument("--backlog-minutes", type=float, default=10.0)
    ap.add_argument("--backlog-rate", type=float, default=None,
                    help="how fast the backlog is published while the gateway is down (default 3 x the city rate)")
    ap.add_argument("--drain-max-s", type=float, default=1200.0, help="stop waiting for the drain after this long")
    ap.add_argument("--why-shorter", default="", help="for BENCHMARKS.md, when the run is shorter than the target")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy each size's gateway log into this directory")
    ap.add_argument("--cold-tsdb", action="store_true", help="leave VictoriaMetrics empty: each watch's first point "
                    "creates its series, as on a city's first day (default: every series is written once before)")
    ap.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md and the chart alone")
    args = ap.parse_args()
    sizes = sorted({int(n.replace("_", "")) for n in args.devices.split(",") if n.strip()})
    if not sizes or sizes[0] < 1:
        ap.error("--devices: one or more positive sizes")
    args.backlog_rate = args.backlog_rate or 3 * args.city_rate

    results = [run_size(n, args, n == sizes[-1]) for n in sizes]

    table = size_table(results)
    rows = summary_rows(results, args)
    print(table)
    for k, v in rows:
        print(f"{k}: {v}")
    if args.no_record:
        return
    drawn = chart(results, results[-1].city, "eldercare gateway at a city's size")
    command = (f".venv/bin/python bench/scale.py --devices {','.join(str(n) for n in sizes)} --field-s {args.field_s:g} "
               f"--city-rate {args.city_rate:g} --city-minutes {args.city_minutes:g} "
               f"--backlog-minutes {args.backlog_minutes:g}" + (" --cold-tsdb" if args.cold_tsdb else ""))
    notes = [table]
    if drawn:
        notes.append(f"![RSS against watches, CPU at the city rate]({CHART.relative_to(REPO)})")
    notes.append(
        "Field cadence: a position every 5 min, health every 10, status every 15 (11 messages per watch per 30 min), "
        "at the rate that makes for the size, for --field-s seconds, so 'heard' is the watches that sent at least "
        "one message. RSS is the sum over the gateway's process group (it and its telemetry child), sampled every "
        "0.2 s for peaks; CPU share is user + system time of the group per second of wall time while the load ran. "
        "Lag is the gateway's arrival-to-acknowledgement time; the catch-up is what the broker still held when the "
        "simulator stopped. Broker, VictoriaMetrics and the simulator share the 2 cores with the gateway.")
    if args.city_minutes < TARGET_MINUTES or args.backlog_minutes < TARGET_MINUTES:
        notes.append(f"This run is shorter than the target's {TARGET_MINUTES} minutes (city {args.city_minutes:g} min, "
                     f"backlog {args.backlog_minutes:g} min): {args.why_shorter or 'no reason given (--why-shorter)'}.")
    notes += [n for r in results for p in (r.field, r.city, r.drain) if p is not None for n in p.notes]
    record("Scale", command, rows, notes="\n\n".join(notes))


if __name__ == "__main__":
    main()
