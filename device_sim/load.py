"""Load mode: many devices over a few `simulator` connections, at a fixed total rate, for a fixed time.

A device here is only an id and its position in the sequence: message k of
a worker goes to device k mod n, whose seq is k div n + 1, so 100,000
devices cost nothing to keep. A device's streams follow a mix, one stream
per seq in turn: status, location, health by default, or the field's
cadence (`cadence_mix(FIELD_CADENCE_S)`: a position every 5 min, health every
10, status every 15) at the rate `cadence_rate` gives for the fleet. Each worker process has one connection and
publishes its share of the rate at QoS 1 with a bounded number in flight;
the report counts what the broker acknowledged.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from device_sim.progress import Progress
from device_sim.publisher import AckCounter, PublishReport, connect
from gateway.broker_accounts import Credentials
from gateway.models import DeviceKind, DevicePayload, Health, Location, WatchStatus
from gateway.tls import TlsFiles
from gateway.topics import DEFAULT_PREFIX, Topics

TICK_S = 0.005
ACK_TIMEOUT_S = 60.0
# What a worker puts on the results queue: ("ready", index) or ("failed", why), then ("done", acked, errors).
_Result = tuple[Any, ...]
# Each worker's acked and errors so far, side by side: a shared array of signed 64-bit integers ("q").
_Counters = ctypes.Array[ctypes.c_longlong]


# How often a watch in the field sends each stream, in seconds.
FIELD_CADENCE_S: Mapping[str, int] = {"location": 300, "health": 600, "status": 900}
# The streams one device sends in turn (by seq) unless a mix is given: status, location, health.
EVEN_MIX = ("status", "location", "health")


def cadence_mix(cadence_s: Mapping[str, int]) -> tuple[str, ...]:
    """One device's streams in the order it sends them over one cycle (the periods' least common multiple), each
    at its own period from a common start; a tie goes in the mapping's order."""
    if not cadence_s or any(p <= 0 for p in cadence_s.values()):
        raise ValueError("every period must be a positive number of seconds")
    cycle = math.lcm(*cadence_s.values())
    order = {stream: i for i, stream in enumerate(cadence_s)}
    sends = sorted((t, order[stream], stream) for stream, period in cadence_s.items() for t in range(0, cycle, period))
    return tuple(stream for _, _, stream in sends)


def cadence_rate(devices: int, cadence_s: Mapping[str, int]) -> float:
    """Messages per second from `devices` devices that each send every stream at its period."""
    return devices * sum(1 / p for p in cadence_s.values())


@dataclass(frozen=True, slots=True)
class LoadReport(PublishReport):
    """`elapsed_s` runs from the start signal to the last worker's last PUBACK."""

    requested_rate: float
    devices: int


@dataclass(frozen=True, slots=True)
class _Share:
    """What one worker process does."""

    index: int
    processes: int
    devices: int
    messages: int
    duration_s: float
    mix: tuple[str, ...] = EVEN_MIX


def device_id(i: int) -> str:
    return f"load-{i:06d}"


def load_payload(device_index: int, seq: int, ts: int, mix: Sequence[str] = EVEN_MIX) -> tuple[str, bytes]:
    """(stream, payload) for a device's `seq`-th message: stream `mix[seq % len(mix)]` (status, location and health
    in turn by default)."""
    body: DevicePayload
    match mix[seq % len(mix)]:
        case "status":
            body = WatchStatus(ts=ts, seq=seq, battery=100 - seq % 100, worn=True, steps=seq * 7 % 20_000)
        case "location":
            body = Location(ts=ts, seq=seq, lat=31.2304 + (device_index % 1000) * 1e-5,
                            lon=121.4737 + (device_index // 1000 % 1000) * 1e-5, accuracy_m=10.0)
        case "health":
            body = Health(ts=ts, seq=seq, heart_rate=60 + (device_index + seq) % 40)
        case other:
            raise ValueError(f"load mode sends status, location and health, not {other!r}")
    return body.stream, body.model_dump_json(exclude_none=True).encode()


def _worker(share: _Share, host: str, port: int, creds: Credentials | None, prefix: str, max_inflight: int,
            protocol: MQTTProtocolVersion, go: mp.synchronize.Event, counters: _Counters,
            results: mp.queues.Queue[_Result], tls: TlsFiles | None) -> None:
    acks, topics = AckCounter(), Topics(prefix)
    mine = len(range(share.index, share.devices, share.processes))
    try:
        client = connect(host, port, f"sim-load-{os.getpid()}-{share.index}", creds, protocol, max_inflight,
                         acks.on_publish, tls)
    except ConnectionError as e:
        results.put(("failed", str(e)))
        return
    results.put(("ready", share.index))
    go.wait()
    start, sent, refused = time.monotonic(), 0, 0
    rate = share.messages / share.duration_s
    while sent + refused < share.messages:
        due = min(share.messages, int((time.monotonic() - start) * rate) + 1)
        # Stay within the in-flight bound ourselves: paho would otherwise queue without limit.
        in_flight = sent - acks.acked - acks.failed
        due = min(due, sent + refused + max_inflight - in_flight)
        while sent + refused < due:
            k = sent + refused
            d = share.index + (k % mine) * share.processes
            stream, payload = load_payload(d, k // mine + 1, int(time.time() * 1000), share.mix)
            if client.publish(topics.device(DeviceKind.WATCH, device_id(d), stream), payload, qos=1).rc:
                refused += 1
            else:
                sent += 1
        counters[2 * share.index], counters[2 * share.index + 1] = acks.acked, acks.failed + refused
        time.sleep(TICK_S)
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while acks.acked + acks.failed < sent and time.monotonic() < deadline:
        time.sleep(0.002)
    counters[2 * share.index], counters[2 * share.index + 1] = acks.acked, acks.failed + refused
    client.disconnect()
    client.loop_stop()
    results.put(("done", acks.acked, sent + refused - acks.acked))


def _wait_until_ready(workers: Sequence[BaseProcess], results: mp.queues.Queue[_Result]) -> None:
    """Every worker connected, or an error naming why not."""
    ready = 0
    while ready < len(workers):
        try:
            msg = results.get(timeout=0.5)
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode is not None]
            if dead:
                raise RuntimeError(f"a load worker exited before connecting (exit code {dead[0]})") from None
            continue
        if msg[0] == "failed":
            raise ConnectionError(msg[1])
        ready += 1


def run_load(host: str = "127.0.0.1", port: int = 1883, username: str | None = "simulator",
             password: str | None = None, devices: int = 1000, rate: float = 1000.0, duration: float = 10.0,
             processes: int | None = None, topic_prefix: str = DEFAULT_PREFIX, max_inflight: int = 500,
             protocol: MQTTProtocolVersion = mqtt.MQTTv311, progress: TextIO | None = None,
             tls: TlsFiles | None = None, mix: Sequence[str] = EVEN_MIX) -> LoadReport:
    """Publish `rate` messages/s in total from `devices` devices for `duration` s; wait for every PUBACK.
    Each device's streams follow `mix` (see `load_payload`)."""
    if devices < 1 or rate <= 0 or duration <= 0:
        raise ValueError("devices, rate and duration must be positive")
    processes = max(1, min(processes or min(2, os.cpu_count() or 1), devices))
    total = round(rate * duration)
    ctx = mp.get_context("spawn")  # no forked copies of the caller's threads and sockets
    go, results = ctx.Event(), ctx.Queue()
    counters: _Counters = ctx.Array("q", 2 * processes, lock=False)
    creds = Credentials(username, password or "") if username else None
    workers = [ctx.Process(target=_worker, daemon=True, args=(
        _Share(i, processes, devices, total // processes + (i < total % processes), duration, tuple(mix)),
        host, port, creds, topic_prefix, max_inflight, protocol, go, counters, results, tls))
        for i in range(processes)]
    for w in workers:
        w.start()
    try:
        _wait_until_ready(workers, results)
    except Exception:
        for w in workers:
            w.kill()
            w.join()
        raise
    shown = Progress(progress) if progress is not None else None
    start = time.monotonic()
    go.set()
    done: list[_Result] = []
    while len(done) < processes:
        try:
            done.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(w.is_alive() for w in workers) and results.empty():
                break  # a worker died: what it sent is counted as errors below
        if shown is not None:
            acked, errors = sum(counters[0::2]), sum(counters[1::2])
            t = time.monotonic() - start
            shown.show(f"{acked:>10} acked  {acked / max(t, 1e-9):>9.0f} msg/s  {errors} errors  {t:5.1f}/{duration:g} s")
    elapsed = time.monotonic() - start
    for w in workers:
        w.join(timeout=5)
    if shown is not None:
        shown.done()
    published = sum(acked for _, acked, _ in done)
    return LoadReport(published, total - published, elapsed, rate, devices)
