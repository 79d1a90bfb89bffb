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


def worker(store, name: str, priority: Priority, acked: queue.SimpleQueue, urgent: bool) -> IngestWorker:
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    pipeline = IngestPipeline(Topics(), store, NoSink(), IngestSettings(), clock=lambda: NOW_MS / 1000)
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
