"""The deterministic message stream: seed, start time and scenario in; (t, topic, payload, qos) out.

Pure: no I/O and no clock. Each device numbers its own messages from 1
(and from 1 again after a reboot) and stamps them with its own clock (which
may jump ahead); scripted silences, redeliveries and malformed payloads are
applied here, the same way for every kind of device.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from device_sim.equipment import machine_readings
from device_sim.malformed import malformed_payload
from device_sim.reading import Reading
from device_sim.routine import community_places
from device_sim.scenario import ANY_DEVICE_ACTIONS, Event, Scenario
from device_sim.wearer import WearerSim
from gateway.models import DeviceKind
from gateway.topics import DEFAULT_PREFIX, Topics

QOS = 1
_REPLAYABLE = 32  # how far back an out-of-order redelivery can reach


class Emitted(NamedTuple):
    """One MQTT publish, `t_ms` after the start."""

    t_ms: int
    topic: str
    payload: bytes
    qos: int


def device_messages(device_id: str, kind: DeviceKind, readings: Iterable[Reading], events: list[Event],
                    topics: Topics, start_epoch_ms: int) -> Iterator[Emitted]:
    """A device's readings as publishes, with its scripted silences, reboots, clock jumps, redeliveries
    and bad payloads."""
    scripted = [e for e in events if e.action in ANY_DEVICE_ACTIONS]
    silences = [(e.t_ms, e.end_ms) for e in scripted if e.action == "silent"]
    jumps = [(e.t_ms, e.end_ms, e.ahead_ms) for e in scripted if e.action == "clock_jump"]
    reboots = sorted(e.t_ms for e in scripted if e.action == "reboot")

    def clock(t: int) -> int:
        """The device's own time at offset t: the true time, plus whatever its clock jumped ahead by."""
        return start_epoch_ms + t + sum(ahead for t0, t1, ahead in jumps if t0 <= t < t1)

    sent: deque[Emitted] = deque(maxlen=_REPLAYABLE)
    seq = 0
    items: Iterator[Reading | Event] = heapq.merge(readings, scripted, key=lambda x: x.t_ms)
    for item in items:
        t = item.t_ms
        while reboots and reboots[0] <= t:  # the counter lives in RAM: a reboot starts it again
            reboots.pop(0)
            seq = 0
        if any(t0 <= t < t1 for t0, t1 in silences):
            continue
        if isinstance(item, Reading):
            seq += 1
            body = item.model(ts=clock(t), seq=seq, **item.fields)
            out = Emitted(t, topics.device(kind, device_id, body.stream), body.model_dump_json(exclude_none=True).encode(), QOS)
            sent.append(out)
            yield out
        elif item.action == "duplicate" and sent:
            yield sent[-1]._replace(t_ms=t)
        elif item.action == "out_of_order" and len(sent) > 1:
            yield sent[-1 - min(item.back, len(sent) - 1)]._replace(t_ms=t)
        elif item.action == "malformed":
            if item.kind is None:   # parse_scenario gives every malformed event one
                raise ValueError(f"{device_id}: a malformed event at {item.at_s:g} s names no kind")
            seq += 1
            stream, payload = malformed_payload(kind, item.kind, clock(t), seq)
            yield Emitted(t, topics.device(kind, device_id, stream), payload, QOS)


def generate(scenario: Scenario, seed: int, start_epoch_ms: int, prefix: str = DEFAULT_PREFIX) -> Iterator[Emitted]:
    """Every device's messages in time order; the same arguments give the same stream."""
    topics = Topics(prefix)
    places = community_places(scenario.community, seed)
    feeds = [device_messages(w, DeviceKind.WATCH, WearerSim(w, scenario, seed, places).readings(),
                             scenario.events_for(w), topics, start_epoch_ms) for w in scenario.watches]
    feeds += [device_messages(d, DeviceKind.EQUIPMENT, machine_readings(d, machine, scenario, seed),
                              scenario.events_for(d), topics, start_epoch_ms) for d, machine in scenario.equipment]
    return heapq.merge(*feeds, key=lambda e: e.t_ms)


def window(stream: Iterable[Emitted], from_ms: int, until_ms: int | None = None) -> Iterator[Emitted]:
    """The part of a stream from `from_ms` up to (not including) `until_ms`, timed from `from_ms`.

    Played one after another, windows send exactly the whole stream: ts and seq come from the
    whole scenario, so a run can stop between windows (for the demo's operations) and go on.
    """
    for e in stream:
        if until_ms is not None and e.t_ms >= until_ms:
            return
        if e.t_ms >= from_ms:
            yield e._replace(t_ms=e.t_ms - from_ms)
