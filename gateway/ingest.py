"""Ingest: from received bytes to durably handled messages, one batch at a time.

For each batch, in this order:
1. judge every message (decode), reject unknown devices; this needs nothing
   of earlier batches, so it runs while the batch before is committed;
2. drop keys already committed and repeats within the batch (after every
   earlier batch is committed, so a key in two batches is recognised);
3. let the observer (alert engine) see the new messages: first, so an SOS
   becomes an alert without waiting for the time-series write, and even if
   the time-series store rejects its point;
4. write the new points to the sink (store or disk spool);
5. commit dedup keys, last state, track and dead letters in one transaction;
6. only then acknowledge the batch to the broker.

A crash before 5 redelivers the batch: the observer recognises the keys
itself and the sink gets the same points again (same series and timestamp,
so the store keeps one). A crash after 5 redelivers keys that step 2 drops.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from prometheus_client import Counter as MetricCounter
from prometheus_client import Histogram

from gateway.backoff import Backoff
from gateway.config import IngestSettings
from gateway.decode import Rejection, decode
from gateway.exercise_store import SessionNews
from gateway.lineprotocol import to_line
from gateway.models import DeviceKind, DeviceMessage
from gateway.mqtt_edge import Received
from gateway.observer import MessageObserver, Refusal
from gateway.priority import Priority
from gateway.sink import SinkRejected
from gateway.store import DeadLetter, OperationalStore
from gateway.topics import TopicError, Topics

log = logging.getLogger(__name__)

# Dead-letter reasons that mean a device said something wrong (as opposed to who or where it said it).
_SAID_WRONGLY = frozenset({"invalid_field", "missing_field", "bad_json", "not_an_object", "too_large"})

_T = TypeVar("_T")

# Observed once per batch (not per message), so measuring costs nothing that shows.
BATCH_MESSAGES = Histogram("eldercare_ingest_batch_messages", "Messages per ingest batch", ["lane"],
                           buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
ACK_DELAY = Histogram("eldercare_ingest_ack_delay_seconds",
                      "Lane lag: from a batch's first message arriving to the batch's acknowledgement to the broker",
                      ["lane"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
# Where a lane's time goes, batch by batch: which step to look at when its lag grows.
STAGES = ("judge", "dedup", "rules", "timeseries", "store")
STAGE_SECONDS = MetricCounter("eldercare_ingest_stage_seconds", "Time a lane spent in each step of its batches",
                              ["lane", "stage"])
for _lane in ("critical", "telemetry"):   # the runner's two lanes: their series exist from the start, at zero
    BATCH_MESSAGES.labels(_lane)
    ACK_DELAY.labels(_lane)
    for _stage in STAGES:
        STAGE_SECONDS.labels(_lane, _stage)


class Sink(Protocol):
    """What ingest needs of a time-series sink."""

    def write(self, lines: Sequence[str]) -> None: ...


@dataclass
class IngestStats:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, int]:
        """What became of the messages: received = accepted + duplicates + ignored + dead-lettered."""
        return {"received": self.received, "accepted": self.accepted, "duplicates": self.duplicates,
                "ignored": self.ignored}

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        return {**self.counts(), "dead_letters": dict(self.dead_letters)}


class DeviceRegistry:
    """Known devices and their kinds, cached; a miss asks the store (the CLI may have registered it since).

    Loaded once per process and shared by both lanes and the alert rules: at a million devices each
    copy costs about 100 MiB and three seconds of startup."""

    def __init__(self, store: OperationalStore, auto_register: bool) -> None:
        self.store = store
        self.auto_register = auto_register
        self._kinds = {device_id: DeviceKind(kind) for device_id, kind in store.registered_devices()}

    def known(self) -> list[tuple[str, DeviceKind]]:
        """(device_id, kind) of every device known so far."""
        return list(self._kinds.items())

    def refusal(self, message: DeviceMessage, now_ms: int) -> Rejection | None:
        """Why a decoded message is not accepted from its device, or None.

        The broker's ACL only ties a topic's device id to the account
        (`%u`); the kind level is the device's to choose, so a watch could
        publish as equipment and raise equipment alerts. The registry knows
        what each device is. A device re-registered as another kind is
        seen as such once it publishes as its new kind.
        """
        kind = self._kinds.get(message.device_id)
        if kind is None or kind != message.kind:
            # Not cached, or re-registered as another kind since: the store has the last word.
            device = self.store.device(message.device_id)
            if device is None:
                if not self.auto_register:
                    return Rejection("unknown_device", f"device {message.device_id!r} is not registered")
                self.store.register_device(message.device_id, message.kind, now_ms, auto=True)
                log.info("auto-registered %s %s", message.kind.value, message.device_id)
                kind = message.kind
            else:
                kind = device.kind
            self._kinds[message.device_id] = kind
        if kind != message.kind:
            return Rejection("kind_mismatch", f"device {message.device_id!r} is registered as {kind.value}, "
                                              f"not {message.kind.value}")
        return None


@dataclass(frozen=True, slots=True)
class Judged:
    """A batch after judging: what may be new (dedup has not looked yet), what goes to dead-letter,
    and which of those came from a clock ahead."""

    now_ms: int
    candidates: list[tuple[Received, DeviceMessage]]
    dead: list[DeadLetter]
    clock_ahead: list[DeviceMessage] = field(default_factory=list)
    received: int = 0      # counted into the stats once committed, so a batch judged again is not counted twice
    ignored: int = 0


class IngestPipeline:
    """Handles batches of received messages; pure of MQTT, so tests drive it directly."""

    def __init__(self, topics: Topics, store: OperationalStore, sink: Sink, settings: IngestSettings,
                 observer: MessageObserver | None = None, skip: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.time,
                 announce: Callable[[Sequence[SessionNews]], None] | None = None,
                 registry: DeviceRegistry | None = None, checkpoint_pages: int | None = None,
                 lane: str = "telemetry") -> None:
        self.topics = topics
        self.store = store
        self.sink = sink
        self.settings = settings
        self.observer = observer
        self.skip = skip or (lambda topic: False)
        self.clock = clock
        self.announce = announce
        self.registry = registry or DeviceRegistry(store, settings.auto_register)
        self.stats = IngestStats()
        # When the committing thread's own commits checkpoint the store (OperationalStore.checkpoint_after);
        # None: the store's default. Set on the first commit, as the connection is the committing thread's.
        self._checkpoint_pages = checkpoint_pages
        self._stage = {stage: STAGE_SECONDS.labels(lane, stage) for stage in STAGES}

    def _dead(self, r: Received, reason: str, detail: str) -> DeadLetter:
        keep = self.settings.dead_letter_payload_bytes
        return DeadLetter(r.received_ms, r.topic, reason, detail, bytes(r.payload[:keep]), len(r.payload))

    def _refusal(self, d: DeadLetter) -> Refusal | None:
        """A dead letter as the observer sees it: only what a known kind of device said wrongly on its own
        topic (not strangers, unknown streams or the gateway's own refusals)."""
        if d.reason not in _SAID_WRONGLY:
            return None
        try:
            where = self.topics.parse(d.topic)
        except TopicError:
            return None
        return Refusal(where.device_id, where.kind, d.reason, d.detail)

    def judge(self, batch: Sequence[Received]) -> Judged:
        """Step 1: pure CPU apart from registry misses."""
        started = time.perf_counter()
        now_ms = int(self.clock() * 1000)
        ignored = 0
        candidates: list[tuple[Received, DeviceMessage]] = []
        dead: list[DeadLetter] = []
        clock_ahead: list[DeviceMessage] = []
        latest_ms = now_ms + int(self.settings.max_clock_skew_s * 1000)
        for r in batch:
            if self.skip(r.topic):
                ignored += 1
                continue
            result = decode(self.topics, r.topic, r.payload, self.settings.max_payload_bytes)
            if isinstance(result, Rejection):
                dead.append(self._dead(r, result.reason, result.detail))
            elif (refused := self.registry.refusal(result, now_ms)) is not None:
                dead.append(self._dead(r, refused.reason, refused.detail))
            elif result.payload.ts > latest_ms:
                ahead_s = (result.payload.ts - now_ms) / 1000
                dead.append(self._dead(r, "ts_in_future", f"device time {ahead_s:.0f} s ahead of the gateway's clock"))
                clock_ahead.append(result)
            else:
                candidates.append((r, result))
        self._timed("judge", started)
        return Judged(now_ms, candidates, dead, clock_ahead, len(batch), ignored)

    def _new(self, candidates: list[tuple[Received, DeviceMessage]]) -> tuple[list[DeviceMessage], list[Received]]:
        """Step 2: the candidates whose keys were never committed, each once."""
        seen = self.store.already_seen([m.key for _, m in candidates]) if candidates else set()
        fresh: list[DeviceMessage] = []
        fresh_raw: list[Received] = []
        for r, m in candidates:
            if m.key in seen:
                continue
            seen.add(m.key)
            fresh.append(m)
            fresh_raw.append(r)
        return fresh, fresh_raw

    def _timed(self, stage: str, since: float) -> float:
        """Count the time since `since` to `stage`; returns now, the next stage's start."""
        now = time.perf_counter()
        self._stage[stage].inc(now - since)
        return now

    def commit(self, judged: Judged) -> None:
        """Steps 2 to 5: dedup, observer, sink, store. Raises if any fails; then the store commits nothing."""
        if self._checkpoint_pages is not None:
            self.store.checkpoint_after(self._checkpoint_pages)
            self._checkpoint_pages = None
        t = time.perf_counter()
        fresh, fresh_raw = self._new(judged.candidates)
        t = self._timed("dedup", t)
        dead = judged.dead
        if judged.clock_ahead and self.observer is not None:
            self.observer.observe_clock_skew(judged.clock_ahead, judged.now_ms)
        if dead and self.observer is not None:
            refusals = [r for d in dead if (r := self._refusal(d)) is not None]
            if refusals:
                self.observer.observe_refused(refusals, judged.now_ms)
        accepted = fresh
        if fresh:
            if self.observer is not None:
                self.observer.observe(fresh, judged.now_ms)
            t = self._timed("rules", t)
            try:
                self.sink.write([to_line(m) for m in fresh])
            except SinkRejected as e:
                # Keep the bytes: nothing valid is lost, an operator can replay them.
                dead = dead + [self._dead(r, "sink_rejected", str(e)) for r in fresh_raw]
                accepted = []
            t = self._timed("timeseries", t)
        news = self.store.commit_batch(accepted, dead, judged.now_ms)
        self._timed("store", t)
        if news and self.announce is not None:
            self.announce(news)
        stats = self.stats
        stats.received += judged.received
        stats.ignored += judged.ignored
        stats.duplicates += len(judged.candidates) - len(fresh)
        stats.accepted += len(accepted)
        stats.dead_letters.update(d.reason for d in dead)

    def handle(self, batch: Sequence[Received]) -> None:
        self.commit(self.judge(batch))


class IngestWorker:
    """Drains one session's inbox in batches and acknowledges what was handled.

    Two threads: the judge thread decodes batch N+1 while the commit thread
    checks dedup for and writes batch N (SQLite and HTTP release the GIL, so
    the two overlap). Dedup is the commit thread's first step, so it sees
    every earlier batch committed and a key in two batches is recognised.
    An urgent lane (the critical one) uses one thread for both.
    """

    def __init__(self, name: str, inbox: queue.SimpleQueue[Received], pipeline: IngestPipeline,
                 ack: Callable[[Sequence[Received]], None], batch_size: int, linger_ms: int,
                 priority: Priority | None = None, urgent: bool = False) -> None:
        self.name = name
        # An urgent lane releases its hold on `priority` once it has acknowledged all it received;
        # the others step aside for it between batches (gateway/priority.py).
        self.priority = priority or Priority()
        self.urgent = urgent
        self.inbox = inbox
        self.pipeline = pipeline
        self.ack = ack
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000
        self._handoff: queue.Queue[tuple[list[Received], Judged]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._batch_messages = BATCH_MESSAGES.labels(name)
        self._ack_delay = ACK_DELAY.labels(name)
        self.lag_s = 0.0   # the last batch's arrival-to-acknowledgement time

    def _next_batch(self) -> list[Received]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        # Let the batch fill by polling its size rather than waking for each
        # message: a wake-up per message hands the GIL back and forth with
        # the network thread, which costs more than the work itself.
        deadline = time.monotonic() + self.linger_s
        while self.inbox.qsize() < self.batch_size - 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        batch = [first]
        for _ in range(min(self.batch_size - 1, self.inbox.qsize())):
            batch.append(self.inbox.get_nowait())
        return batch

    def _until_done(self, step: Callable[[], _T], what: str) -> _T:
        backoff = Backoff(0.5, 30.0)
        while True:
            try:
                return step()
            except Exception:
                # Not acknowledged, so not lost: try the same batch again.
                delay = backoff.next_s()
                log.exception("%s: %s failed; retrying in %.1f s", self.name, what, delay)
                if self._stop.wait(delay):
                    raise

    def _judge(self, batch: list[Received]) -> Judged:
        return self._until_done(functools.partial(self.pipeline.judge, batch), f"judging {len(batch)}")

    def _judge_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            self.priority.yield_to_urgent()
            try:
                judged = self._judge(batch)
            except Exception:
                return  # stopping: the batch stays unacknowledged
            self._handoff.put((batch, judged))

    def _commit_loop(self) -> None:
        while not self._stop.is_set() or not self._handoff.empty():
            try:
                batch, judged = self._handoff.get(timeout=0.2)
            except queue.Empty:
                continue
            self.priority.yield_to_urgent()
            try:
                self._commit(batch, judged)
            except Exception:
                return

    def _commit(self, batch: list[Received], judged: Judged) -> None:
        self._until_done(functools.partial(self.pipeline.commit, judged), f"committing {len(batch)}")
        self.ack(batch)
        self.lag_s = max(0.0, time.time() - batch[0].received_ms / 1000)
        self._batch_messages.observe(len(batch))
        self._ack_delay.observe(self.lag_s)

    def _urgent_loop(self) -> None:
        """The urgent lane judges and commits in one thread: its batches are a message or two, so there is
        nothing to overlap, and each hand-over between threads would wait its turn for the interpreter."""
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            try:
                self._commit(batch, self._judge(batch))
            except Exception:
                return  # stopping: the batch stays unacknowledged
            if not self.inbox.qsize():
                self.priority.release(self.name)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._urgent_loop, name=f"ingest-{self.name}", daemon=True),
        ] if self.urgent else [
            threading.Thread(target=self._judge_loop, name=f"ingest-{self.name}-judge", daemon=True),
            threading.Thread(target=self._commit_loop, name=f"ingest-{self.name}-commit", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
