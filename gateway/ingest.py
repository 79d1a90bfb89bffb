"""Ingest: from received bytes to durably handled messages, one batch at a time.

For each batch, in this order:
1. judge every message (decode), reject unknown devices; this needs nothing
   of earlier batches, so it runs while the batch before is written;
2. drop keys already committed, keys of earlier batches still on their way
   to the store (see below), and repeats within the batch;
3. let the observer (alert engine) see the new messages: first, so an SOS
   becomes an alert without waiting for the time-series write, and even if
   the time-series store rejects its point;
4. write the new points to the sink (store or disk spool);
5. commit dedup keys, last state, track and dead letters in one transaction;
6. only then acknowledge the batch to the broker.

Steps 2-4 are `prepare`, 5-6 `record`. The telemetry lane records batch N
in a thread of its own while it prepares batch N+1, so the wait for the
time-series store and the operational store's commit overlap; until batch N
is recorded its keys are "in flight", and step 2 drops them as it drops
committed ones.

A crash before 5 redelivers the batch: the observer recognises the keys
itself and the sink gets the same points again (same series and timestamp,
so the store keeps one). A crash after 5 redelivers keys that step 2 drops.
The sink is written before the store commits, never after: a batch the
store has and the sink has not would be dropped as already seen when
it came again.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from prometheus_client import Counter as MetricCounter
from prometheus_client import Histogram

from gateway.backoff import Backoff
from gateway.config import IngestSettings
from gateway.db import Key
from gateway.decode import Rejection, decode
from gateway.exercise_store import SessionNews
from gateway.lineprotocol import to_line
from gateway.models import DeviceKind, DeviceMessage
from gateway.mqtt_edge import Received
from gateway.observer import MessageObserver, Refusal
from gateway.priority import Priority
from gateway.sink import SinkRejected
from gateway.store import BatchRows, DeadLetter, OperationalStore, batch_rows
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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch after steps 2-4: its new points are in the time-series store (or the spool); what the
    operational store is to record of it."""

    judged: Judged
    accepted: list[DeviceMessage]
    dead: list[DeadLetter]
    fresh: int             # new messages: accepted, or dead-lettered because the sink refused them


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
        # What commits a batch's rows: the store, in the committing thread; the runner puts the store
        # process's `commit` here for the telemetry lane (gateway/store_process.py).
        self.commit_rows: Callable[[BatchRows], list[SessionNews]] = store.commit_rows
        self.stats = IngestStats()
        # When the committing thread's own commits checkpoint the store (OperationalStore.checkpoint_after);
        # None: the store's default. Set on the first commit, as the connection is the committing thread's.
        self._checkpoint_pages = checkpoint_pages
        self._stage = {stage: STAGE_SECONDS.labels(lane, stage) for stage in STAGES}
        # Keys of batches prepared and not yet recorded (the lane's two threads share them).
        self._in_flight: set[Key] = set()
        self._in_flight_lock = threading.Lock()
        self._retrying: set[int] = set()   # ids of prepared batches whose commit failed and is to be tried again

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
        """Step 2: the candidates whose keys were never committed and are not in flight, each once."""
        if not candidates:
            return [], []
        keys = [m.key for _, m in candidates]
        # In flight first, then the store: a batch recorded in between has left the one for the other.
        with self._in_flight_lock:
            seen = {k for k in keys if k in self._in_flight}
        seen |= self.store.already_seen(keys)
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

    def prepare(self, judged: Judged) -> Prepared:
        """Steps 2 to 4: dedup, observer, sink. Raises if the sink fails (not if it refuses the batch)."""
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
            self._timed("timeseries", t)
            with self._in_flight_lock:
                self._in_flight.update(m.key for m in accepted)
        return Prepared(judged, accepted, dead, len(fresh))

    def record(self, prepared: Prepared) -> None:
        """Step 5: commit the batch to the operational store. Raises if the store fails; the batch's keys stay
        in flight for the retry (`forget` them to give up)."""
        if self._checkpoint_pages is not None:
            self.store.checkpoint_after(self._checkpoint_pages)
            self._checkpoint_pages = None
        t = time.perf_counter()
        judged, accepted, dead = prepared.judged, prepared.accepted, prepared.dead
        if id(prepared) in self._retrying and accepted:
            # The try that failed may have committed after all (a connection lost during COMMIT): what it
            # committed must not be folded into the exercise sessions a second time.
            done = self.store.already_seen([m.key for m in accepted])
            accepted = [m for m in accepted if m.key not in done]
        try:
            news = self.commit_rows(batch_rows(accepted, dead, judged.now_ms))
        except BaseException:
            self._retrying.add(id(prepared))
            raise
        self._timed("store", t)
        self.forget(prepared)
        if news and self.announce is not None:
            self.announce(news)
        stats = self.stats
        stats.received += judged.received
        stats.ignored += judged.ignored
        stats.duplicates += len(judged.candidates) - prepared.fresh
        stats.accepted += len(prepared.accepted)
        stats.dead_letters.update(d.reason for d in dead)

    def forget(self, prepared: Prepared) -> None:
        """The batch's keys are no longer in flight: recorded, or given up (it will come again unacknowledged)."""
        self._retrying.discard(id(prepared))
        if prepared.accepted:
            with self._in_flight_lock:
                self._in_flight.difference_update(m.key for m in prepared.accepted)

    def commit(self, judged: Judged) -> None:
        """Steps 2 to 5 at once. Raises if any fails; then the store commits nothing."""
        prepared = self.prepare(judged)
        try:
            self.record(prepared)
        except BaseException:
            self.forget(prepared)
            raise

    def handle(self, batch: Sequence[Received]) -> None:
        self.commit(self.judge(batch))


class IngestWorker:
    """Drains one session's inbox in batches and acknowledges what was handled.

    Three threads: the judge thread decodes batch N+2 while the write thread
    deduplicates batch N+1, shows it to the rules and writes its points to the
    time-series store, while the store thread commits batch N to the
    operational store and acknowledges it (SQLite and HTTP release the GIL, so
    they overlap). Dedup sees every earlier batch committed or in flight, so a
    key in two batches is recognised. An urgent lane (the critical one) uses
    one thread for all: its batches are a message or two.
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
        self._judged: queue.Queue[tuple[list[Received], Judged]] = queue.Queue(maxsize=1)
        self._prepared: queue.Queue[tuple[list[Received], Prepared]] = queue.Queue(maxsize=1)
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

    def _judge_loop(self, writing: threading.Thread) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            self.priority.yield_to_urgent()
            try:
                judged = self._judge(batch)
            except Exception:
                return  # stopping: the batch stays unacknowledged
            if not self._hand_over(self._judged, (batch, judged), writing):
                return

    def _hand_over(self, handoff: queue.Queue[tuple[list[Received], _T]], item: tuple[list[Received], _T],
                   taker: threading.Thread) -> bool:
        """Put the item for the next thread; False if that thread has stopped for good (the batch stays
        unacknowledged)."""
        while True:
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                if self._stop.is_set() and not taker.is_alive():
                    return False

    def _taken(self, handoff: queue.Queue[tuple[list[Received], _T]],
               giver: threading.Thread) -> Iterator[tuple[list[Received], _T]]:
        """What the thread before hands over, until stopping, that thread has ended and nothing is left."""
        while not (self._stop.is_set() and not giver.is_alive() and handoff.empty()):
            try:
                yield handoff.get(timeout=0.2)
            except queue.Empty:
                continue

    def _write_loop(self, judging: threading.Thread, storing: threading.Thread) -> None:
        for batch, judged in self._taken(self._judged, judging):
            self.priority.yield_to_urgent()
            try:
                prepared = self._until_done(functools.partial(self.pipeline.prepare, judged), f"writing {len(batch)}")
            except Exception:
                return  # stopping: the batch stays unacknowledged
            if not self._hand_over(self._prepared, (batch, prepared), storing):
                self.pipeline.forget(prepared)
                return

    def _store_loop(self, writing: threading.Thread) -> None:
        stopped = False
        for batch, prepared in self._taken(self._prepared, writing):
            if not stopped:
                # The operational store's lock is one a press's commit needs.
                self.priority.yield_to_urgent()
                try:
                    self._until_done(functools.partial(self.pipeline.record, prepared), f"committing {len(batch)}")
                    self._acknowledge(batch)
                    continue
                except Exception:
                    stopped = True   # stopping while the store fails: this batch and those after stay unacknowledged
            self.pipeline.forget(prepared)

    def _acknowledge(self, batch: list[Received]) -> None:
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
                judged = self._judge(batch)
                self._until_done(functools.partial(self.pipeline.commit, judged), f"committing {len(batch)}")
            except Exception:
                return  # stopping: the batch stays unacknowledged
            self._acknowledge(batch)
            if not self.inbox.qsize():
                self.priority.release(self.name)

    def start(self) -> None:
        if self.urgent:
            self._threads = [threading.Thread(target=self._urgent_loop, name=f"ingest-{self.name}", daemon=True)]
        else:
            # Each thread knows the one before it and the one after, which it waits for when stopping
            # (the lambdas run once all three exist).
            judging = threading.Thread(target=lambda: self._judge_loop(writing), name=f"ingest-{self.name}-judge",
                                       daemon=True)
            writing = threading.Thread(target=lambda: self._write_loop(judging, storing),
                                       name=f"ingest-{self.name}-write", daemon=True)
            storing = threading.Thread(target=lambda: self._store_loop(writing), name=f"ingest-{self.name}-store",
                                       daemon=True)
            self._threads = [judging, writing, storing]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
