"""IngestWorker and Priority: telemetry steps aside while a press is under way; the critical lane never does."""
from __future__ import annotations

import queue
import threading

import pytest

from gateway.config import IngestSettings
from gateway.ingest import IngestPipeline, IngestWorker
from gateway.models import DeviceKind
from gateway.mqtt_edge import Received
from gateway.priority import Priority
from gateway.store import OperationalStore
from gateway.topics import Topics

NOW_MS = 1_767_225_660_000


class NoSink:
    def write(self, lines):
        pass


class CountingSink:
    def __init__(self) -> None:
        self.batches = 0
        self.changed = threading.Condition()

    def write(self, lines):
        with self.changed:
            self.batches += 1
            self.changed.notify_all()

    def reached(self, batches: int, timeout_s: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.batches >= batches, timeout_s)


@pytest.fixture
def store(tmp_path):
    s = OperationalStore(tmp_path / "gateway.db")
    s.register_device("w1", DeviceKind.WATCH, now_ms=0)
    yield s
    s.close()


def message(stream: str, seq: int) -> Received:
    body = b'{"ts": %d, "seq": %d, "heart_rate": 70}' % (NOW_MS - 1000 + seq, seq) if stream == "health" else \
        b'{"ts": %d, "seq": %d}' % (NOW_MS - 1000 + seq, seq)
    return Received(f"eldercare/watch/w1/{stream}", body, mid=seq, qos=1, received_ms=NOW_MS, connection=1)


def worker(store, name: str, priority: Priority, acked: queue.SimpleQueue, urgent: bool, sink=None) -> IngestWorker:
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    pipeline = IngestPipeline(Topics(), store, sink or NoSink(), IngestSettings(), clock=lambda: NOW_MS / 1000)
    return IngestWorker(name, inbox, pipeline, lambda batch: [acked.put(r.mid) for r in batch], 10, 0,
                        priority, urgent=urgent)


def test_telemetry_waits_while_a_press_holds_priority_and_goes_on_once_it_is_released(store):
    priority = Priority(hold_s=30)
    priority.hold("critical")
    acked: queue.SimpleQueue[int] = queue.SimpleQueue()
    telemetry = worker(store, "telemetry", priority, acked, urgent=False)
    telemetry.start()
    try:
        telemetry.inbox.put(message("health", 1))
        with pytest.raises(queue.Empty):
            acked.get(timeout=0.5)          # held: not handled, so not acknowledged
        priority.release("critical")
        assert acked.get(timeout=10) == 1
    finally:
        telemetry.stop()
    assert priority.yielded >= 1


def test_the_critical_lane_goes_on_under_its_own_hold_and_releases_it_once_all_it_received_is_acknowledged(store):
    priority = Priority(hold_s=30)
    acked: queue.SimpleQueue[int] = queue.SimpleQueue()
    critical = worker(store, "critical", priority, acked, urgent=True)
    critical.start()
    try:
        critical.inbox.put(message("sos", 1))
        priority.hold("critical")           # as the critical session does on each arrival
        assert acked.get(timeout=10) == 1
        for _ in range(500):                # bounded wait for the worker's release after its ack
            if not priority.urgent():
                break
            threading.Event().wait(0.01)
        assert not priority.urgent()
    finally:
        critical.stop()
    assert store.seen_count() == 1


def test_telemetry_writes_the_next_batch_to_the_time_series_store_while_the_last_one_is_committed(store):
    sink = CountingSink()
    overlapped: list[bool] = []

    def fence(db):   # runs inside each commit: the first one waits for the next batch's write
        if not overlapped:
            overlapped.append(sink.reached(2, timeout_s=5))

    store.fence = fence
    acked: queue.SimpleQueue[int] = queue.SimpleQueue()
    telemetry = worker(store, "telemetry", Priority(), acked, urgent=False, sink=sink)
    telemetry.start()
    try:
        telemetry.inbox.put(message("health", 1))
        assert sink.reached(1)
        telemetry.inbox.put(message("health", 2))
        assert sorted([acked.get(timeout=20), acked.get(timeout=20)]) == [1, 2]
    finally:
        telemetry.stop()
    assert overlapped == [True]
    assert store.seen_count() == 2


def test_stopping_while_the_store_is_down_ends_every_thread_and_acknowledges_nothing(store):
    sink = CountingSink()

    def fence(db):
        raise ConnectionError("store unreachable")

    store.fence = fence
    acked: queue.SimpleQueue[int] = queue.SimpleQueue()
    telemetry = worker(store, "telemetry", Priority(), acked, urgent=False, sink=sink)
    telemetry.start()
    for seq in (1, 2, 3):   # one retrying its commit, one waiting for it, one written and waiting to hand over
        telemetry.inbox.put(message("health", seq))
        assert sink.reached(seq)
    telemetry.stop()
    assert not any(t.is_alive() for t in telemetry._threads)
    assert acked.empty() and store.seen_count() == 0
    # What was given up is no longer in flight: it is taken in full when it comes again.
    store.fence = None
    pipeline = telemetry.pipeline
    assert len(pipeline.prepare(pipeline.judge([message("health", seq) for seq in (1, 2, 3)])).accepted) == 3
