"""The MQTT session in a child process: the pipe protocol on both ends, without a broker.

The child end runs `_child` in a thread with a recording stand-in for MqttSession.
The parent end runs ChildProcessSession with a stand-in child process that speaks
the same protocol, so forwarding, acknowledgement and respawning are seen as the
ingest worker sees them.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from typing import ClassVar

import pytest

from gateway import edge_process
from gateway.config import MqttSettings
from gateway.edge_process import ChildProcessSession
from gateway.mqtt_edge import Received
from gateway.mqtt_receiver import MqttReceiver

SETTINGS = MqttSettings()
WAIT_S = 20


# ---- the child end ------------------------------------------------------------------------------

class RecordingSession:
    """Stands in for the receiving session inside `_child`: delivers what the test gives it, records acks."""

    made: ClassVar[list[RecordingSession]] = []

    def __init__(self, settings, client_id, subscriptions, inbox, protocol="5") -> None:
        self.inbox = inbox
        self.connection = 0
        self.connected = threading.Event()
        self.acked: list[Received] = []
        self.started = self.stopped = False
        RecordingSession.made.append(self)

    def start(self) -> None:
        self.started = True

    def ack(self, batch) -> None:
        self.acked.extend(batch)

    def stop(self) -> None:
        self.stopped = True


class RecordingReceiver(MqttReceiver):
    """The gateway's own 3.1.1 receiver, not connecting to anything: the test calls `deliver` as a read would."""

    made: ClassVar[list[RecordingReceiver]] = []

    def __init__(self, settings, client_id, subscriptions, inbox, protocol="3.1.1") -> None:
        super().__init__(settings, client_id, subscriptions, inbox)
        RecordingReceiver.made.append(self)

    def start(self) -> None:
        pass


def _run_child(monkeypatch, session_class):
    session_class.made.clear()
    monkeypatch.setattr(edge_process, "receiving_session", session_class)
    monkeypatch.setattr(edge_process.signal, "signal", lambda *a: None)  # only the main thread may set handlers
    parent, child = mp.Pipe()
    thread = threading.Thread(target=edge_process._child, args=(SETTINGS, "c", ["t/#"], child, 5_000_000), daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not session_class.made and time.monotonic() < deadline:
        time.sleep(0.01)
    yield parent, session_class.made[0], thread
    parent.close()
    thread.join(WAIT_S)


@pytest.fixture
def child_end(monkeypatch):
    """`_child` running in a thread around a paho-like session; yields (parent's end of the pipe, the session,
    the thread)."""
    yield from _run_child(monkeypatch, RecordingSession)


@pytest.fixture
def receiver_child_end(monkeypatch):
    """The same around the gateway's own receiver."""
    yield from _run_child(monkeypatch, RecordingReceiver)


def _recv_until(conn, kind: str) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if conn.poll(0.1):
            got_kind, body = conn.recv()
            if got_kind == kind:
                return body
    raise AssertionError(f"no {kind!r} from the child")


def test_the_child_reports_its_connection_and_forwards_messages_with_their_connection_number(child_end):
    parent, session, _ = child_end
    assert session.started and session.connection == 5_000_000
    session.connected.set()
    assert _recv_until(parent, "connected") is True
    session.inbox.put(Received("eldercare/watch/w1/sos", b"{}", 7, 1, 123, 5_000_000))
    session.inbox.put(Received("eldercare/watch/w1/health", b"{}", 8, 0, 124, 5_000_000))
    forwarded = []
    while len(forwarded) < 2:
        forwarded += _recv_until(parent, "messages")
    assert forwarded == [("eldercare/watch/w1/sos", b"{}", 7, 1, 123, 5_000_000),
                         ("eldercare/watch/w1/health", b"{}", 8, 0, 124, 5_000_000)]
    session.connected.clear()
    assert _recv_until(parent, "connected") is False


def test_the_childs_own_receiver_sends_each_read_to_the_parent_as_one_batch_without_the_inbox(receiver_child_end):
    parent, session, _ = receiver_child_end
    assert session.connection == 5_000_000
    read = [("eldercare/watch/w1/location", b'{"a":1}', 7, 1, 123, 5_000_000),
            ("eldercare/watch/w2/health", b'{"b":2}', 8, 1, 123, 5_000_000)]
    session.deliver(read)
    assert parent.poll(0)   # already sent when deliver returns, not left for a thread that looks every few ms
    assert _recv_until(parent, "messages") == read
    assert session.inbox.empty()
    session.connected.set()
    assert _recv_until(parent, "connected") is True


def test_the_child_acknowledges_only_what_the_parent_asks_and_stops_when_told(child_end):
    parent, session, thread = child_end
    parent.send(("ack", [(7, 1, 5_000_000), (9, 1, 5_000_000)]))
    parent.send(("stop", None))
    thread.join(WAIT_S)
    assert not thread.is_alive() and session.stopped
    assert [(r.mid, r.qos, r.connection) for r in session.acked] == [(7, 1, 5_000_000), (9, 1, 5_000_000)]


def test_the_child_leaves_without_acknowledging_when_the_parent_is_gone(child_end):
    parent, session, thread = child_end
    parent.close()
    thread.join(WAIT_S)
    assert not thread.is_alive() and session.stopped and session.acked == []


# ---- the parent end -----------------------------------------------------------------------------

def stand_in_child(settings, client_id, subscriptions, conn, first_connection, protocol="5") -> None:
    """A child process speaking the pipe protocol: connects, delivers two messages, echoes acks back.

    With client id "dies-once" the first generation exits right after delivering,
    as a crashed child would, without acknowledging anything.
    """
    conn.send(("connected", True))
    conn.send(("messages", [("t/a", b"1", 1, 1, 10, first_connection), ("t/b", b"2", 2, 0, 11, first_connection)]))
    if client_id == "dies-once" and first_connection == 1_000_000:
        os._exit(3)
    while True:
        kind, body = conn.recv()
        if kind == "ack":
            conn.send(("messages", [("acked", repr(body).encode(), 0, 0, 0, first_connection)]))
        elif kind == "stop":
            return


class StandInSession(ChildProcessSession):
    child_main = staticmethod(stand_in_child)


def _take(inbox: queue.SimpleQueue[Received], n: int) -> list[Received]:
    return [inbox.get(timeout=WAIT_S) for _ in range(n)]


def test_the_parent_queues_the_childs_messages_and_sends_acks_only_for_qos_1():
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    session = StandInSession(SETTINGS, "steady", ["t/#"], inbox)
    session.start()
    try:
        first = _take(inbox, 2)
        assert session.connected.wait(WAIT_S)
        assert first == [Received("t/a", b"1", 1, 1, 10, 1_000_000), Received("t/b", b"2", 2, 0, 11, 1_000_000)]
        session.ack(first)
        session.ack([first[1]])  # QoS 0 only: nothing to send
        (echo,) = _take(inbox, 1)
        assert echo.topic == "acked" and echo.payload == repr([(1, 1, 1_000_000)]).encode()
    finally:
        session.stop()
    assert session._proc is not None and session._proc.exitcode == 0  # left on "stop", not killed


def test_a_dead_child_is_replaced_and_the_new_connection_numbers_never_repeat_the_old():
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    session = StandInSession(SETTINGS, "dies-once", ["t/#"], inbox)
    session.start()
    try:
        got = _take(inbox, 4)
        assert [r.connection for r in got] == [1_000_000, 1_000_000, 2_000_000, 2_000_000]
        # Acknowledgements now reach the new child, tagged with its own connection number.
        session.ack(got[2:3])
        (echo,) = _take(inbox, 1)
        assert echo.payload == repr([(1, 1, 2_000_000)]).encode()
    finally:
        session.stop()
