"""An MQTT session in a process of its own.

paho's receive path costs about as much CPU per message as all of ingest,
and in one process both share one GIL. Running the telemetry session in a
child process gives each a core. The child only receives, forwards batches
of raw messages over a pipe, and sends the PUBACKs the parent asks for; it
never acknowledges anything by itself, so the delivery guarantee is the
in-process one. If the parent dies the pipe closes and the child leaves;
if the child dies the parent starts another (a new MQTT connection, so
unacknowledged messages are redelivered and recognised by dedup).
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway.config import MqttSettings
from gateway.mqtt_edge import Protocol, Received, ReceivedFields
from gateway.mqtt_receiver import MqttReceiver, receiving_session
from gateway.priority import Priority

log = logging.getLogger(__name__)

_FORWARD_EVERY_S = 0.002
_CONNECTION_EVERY_S = 0.05   # how soon the parent hears that the session connected or lost its broker
_GENERATION_STRIDE = 1_000_000  # keeps connection numbers unique across child restarts


def _child(settings: MqttSettings, client_id: str, subscriptions: list[str], conn: Connection,
           first_connection: int, protocol: Protocol = "5") -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    session = receiving_session(settings, client_id, subscriptions, inbox, protocol)
    session.connection = first_connection
    send_lock = threading.Lock()
    stop = threading.Event()

    def send_messages(batch: list[ReceivedFields]) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):   # the parent is gone: the main loop ends us
            conn.send(("messages", batch))

    if isinstance(session, MqttReceiver):
        # Each read's messages go to the parent as one batch from the receiving thread itself: no queue, and
        # no thread woken 500 times a second to look at it. At 5,000 msg/s that thread used 3 % of a core;
        # the child as a whole now uses about 2 points less (BENCHMARKS.md, eighth round).
        session.deliver = send_messages
        look_every_s = _CONNECTION_EVERY_S
    else:
        look_every_s = _FORWARD_EVERY_S   # paho puts each message in the inbox

    def forward() -> None:
        """The inbox's messages (paho's), and the connection's state whenever it changes."""
        connected = False
        while not stop.is_set():
            batch = []
            try:
                while True:
                    batch.append(inbox.get_nowait().fields())
            except queue.Empty:
                pass
            if batch:
                send_messages(batch)
            if session.connected.is_set() != connected:
                connected = not connected
                with send_lock:
                    conn.send(("connected", connected))
            if not batch:
                time.sleep(look_every_s)

    session.start()
    forwarder = threading.Thread(target=forward, name="forward", daemon=True)
    forwarder.start()
    try:
        while True:
            kind, body = conn.recv()
            if kind == "ack":
                session.ack([Received("", b"", mid, qos, 0, connection) for mid, qos, connection in body])
            elif kind == "stop":
                break
    except (EOFError, OSError):
        pass  # the parent is gone: leave without acknowledging anything more
    stop.set()
    session.stop()


class ChildProcessSession:
    """Looks like MqttSession to the ingest worker; the session itself runs in a child process."""

    # What the child process runs; a unit test puts a stand-in that speaks the same pipe protocol here.
    child_main = staticmethod(_child)

    def __init__(self, settings: MqttSettings, client_id: str, subscriptions: list[str],
                 inbox: queue.SimpleQueue[Received], protocol: Protocol = "5", priority: Priority | None = None) -> None:
        self.settings = settings
        self.priority = priority or Priority()   # forwarding steps aside while a press is under way
        self.protocol = protocol
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.inbox = inbox
        self.connected = threading.Event()
        self._ctx = mp.get_context("spawn")  # never fork a process that already runs threads
        self._generation = 0
        self._conn: Connection | None = None
        self._proc: BaseProcess | None = None
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    def _spawn(self) -> None:
        self._generation += 1
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=self.child_main, name=f"mqtt-{self.client_id}", daemon=True,
            args=(self.settings, self.client_id, self.subscriptions, child_end,
                  self._generation * _GENERATION_STRIDE, self.protocol),
        )
        self._proc = proc
        proc.start()
        child_end.close()
        self._conn = parent_end

    def start(self) -> None:
        self._spawn()
        self._reader = threading.Thread(target=self._read, name=f"from-{self.client_id}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            # start() spawned the child before starting this thread; only this thread respawns it.
            conn, proc = self._conn, self._proc
            assert conn is not None and proc is not None
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.error("%s: MQTT child process ended (exit code %s); starting another",
                          self.client_id, proc.exitcode)
                proc.join(timeout=5)
                time.sleep(0.5)
                self._spawn()
                continue
            if kind == "messages":
                self.priority.yield_to_urgent()
                put = self.inbox.put
                for item in body:
                    put(Received(*item))
            elif kind == "connected":
                (self.connected.set if body else self.connected.clear)()

    def ack(self, batch: Sequence[Received]) -> None:
        acks = [(r.mid, r.qos, r.connection) for r in batch if r.qos]
        if not acks:
            return
        with self._send_lock, contextlib.suppress(OSError, ValueError):  # child gone: the broker redelivers, dedup recognises
            if self._conn is not None:
                self._conn.send(("ack", acks))

    def stop(self) -> None:
        self._stop.set()
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            if self._conn is not None:
                self._conn.send(("stop", None))
        if self._proc is not None:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
