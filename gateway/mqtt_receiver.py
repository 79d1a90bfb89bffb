"""The telemetry session: a receive-only MQTT 3.1.1 client on one socket.

Telemetry is nearly all of the traffic, and a general MQTT client's receive
path was the gateway's ceiling: paho spent about 60-80 us of CPU per message
(a select and several recv calls per packet), this spends about 10 (reads
of up to 256 KiB, split by `mqtt_packets.PacketReader`, PUBACKs written
together; when the broker only trickles, a read is followed by a 2 ms pause
so that the next one takes many packets, not one). It keeps everything the
delivery guarantee needs:

- a persistent session (`clean_session=False`), resumed on every reconnect,
  so what arrives while the gateway is away waits in the broker;
- QoS 1 with acknowledgement only when ingest asks (`ack`), and only on the
  connection that delivered the message: after a reconnect the broker
  redelivers the rest and dedup recognises them;
- keepalive (`Liveness`: a PINGREQ when nothing was sent or nothing heard
  for a keepalive, and a ping unanswered for one drops the connection),
  reconnect with jittered backoff, TLS;
- flow control: once `receive_maximum` messages wait for their
  acknowledgement the session stops reading the socket until ingest
  acknowledges some, so TCP holds the broker back and the rest wait in the
  broker, not in the gateway's memory. 3.1.1 has no Receive Maximum to tell
  the broker, and Mosquitto 2.0 does not keep to its `max_inflight_messages`
  for a resumed session: it handed a gateway restarting after a 10-minute
  city backlog 2.6 million messages at once (1.9 GiB);
- a retained message sent because of the subscription (the broker marks
  only those RETAIN) is acknowledged and dropped: 3.1.1 cannot refuse them
  at subscribe time as v5 does, and an old reading replayed after the dedup
  window would count again.

One thread does all reads and writes (an SSL socket must not be read and
written from two threads at once); `ack` from the ingest thread queues the
PUBACKs and wakes it through a socket pair.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway import mqtt_packets as mp
from gateway.backoff import Backoff, jitter_down_to_half
from gateway.config import MqttSettings
from gateway.mqtt_edge import MqttSession, Protocol, Received, ReceivedFields

log = logging.getLogger(__name__)

_READ_BYTES = 256 * 1024
# A read shorter than this found the socket nearly empty: the broker is trickling, not flooding. The session
# then waits `_GATHER_S` before it looks again, so that the next read takes many packets instead of one. At a
# city's rate (5,000 messages a second) a read per packet is a wakeup, a select and a recv for each message;
# a draining backlog fills every read and never waits. Telemetry only: the critical lane has its own session.
_GATHER_BELOW = 16 * 1024
_GATHER_S = 0.002
_SUBSCRIBE_ID = 1


class BrokerRefused(Exception):
    """The broker answered CONNECT with a refusal (bad password, not authorised, ...)."""


class _Gone(Exception):
    """The connection ended or went silent."""


@dataclass(slots=True)
class Liveness:
    """When the session pings the broker and when it gives the connection up (monotonic seconds).

    A ping is due when nothing was sent for a keepalive (the broker drops a client silent for one and a
    half) and also when nothing was heard for one: a broker that has handed over its whole queue sends
    nothing while the gateway is still sending acknowledgements, and only a ping tells a quiet broker
    from a dead connection. The connection is given up when a ping goes unanswered for a keepalive.
    """

    keepalive_s: float
    last_sent: float
    last_heard: float = field(init=False)
    ping_sent: float | None = None

    def __post_init__(self) -> None:
        self.last_heard = self.last_sent

    def ping_due(self, now: float) -> bool:
        if self.ping_sent is not None:
            return False
        return now - self.last_sent >= self.keepalive_s or now - self.last_heard >= self.keepalive_s

    def pinged(self, now: float) -> None:
        self.ping_sent = self.last_sent = now

    def heard(self, now: float) -> None:
        self.last_heard = now
        self.ping_sent = None

    def dead(self, now: float) -> bool:
        return self.ping_sent is not None and now - self.ping_sent > self.keepalive_s


class MqttReceiver:
    """A persistent 3.1.1 session that subscribes on every connect and reconnects by itself."""

    def __init__(self, settings: MqttSettings, client_id: str, subscriptions: list[str],
                 inbox: queue.SimpleQueue[Received]) -> None:
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.inbox = inbox
        # Where each read's messages go, as their fields: into the inbox one by one, unless the owner takes them
        # as a list (the child process of gateway/edge_process.py sends each read's to its parent as one batch).
        self.deliver: Callable[[list[ReceivedFields]], None] = self._put_each
        self.connection = 0
        self.connected = threading.Event()
        self._acks: deque[Received] = deque()
        self.unacked = 0   # QoS 1 messages handed to the inbox on this connection and not yet acknowledged
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None

    # -- any thread ---------------------------------------------------------

    def ack(self, batch: Sequence[Received]) -> None:
        """Acknowledge handled messages; the session's thread sends the PUBACKs."""
        self._acks.extend(batch)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # already awake, or closed
            self._wake_w.send(b"\0")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread:
            self._thread.join(timeout=10)
        self._wake_r.close()
        self._wake_w.close()

    # -- the session's thread ------------------------------------------------

    def _run(self) -> None:
        # Jittered so gateways that lost the same broker do not all come back at once.
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s, jitter=jitter_down_to_half)
        while not self._stop.is_set():
            sock: socket.socket | None = None
            try:
                sock, reader, early = self._open()
                backoff.reset()
                self._take(*early)
                self._serve(sock, reader)
            except BrokerRefused as e:
                log.error("%s: broker refused the connection: %s", self.client_id, e)
            except (OSError, mp.ProtocolError, _Gone) as e:
                if not self._stop.is_set():
                    log.warning("%s: connection to broker %s:%s lost or refused (%s)", self.client_id,
                                self.settings.host, self.settings.port, e or type(e).__name__)
            finally:
                self.connected.clear()
                if sock is not None:
                    self._close(sock)
            if not self._stop.is_set():
                self._stop.wait(backoff.next_s())

    def _open(self) -> tuple[socket.socket, mp.PacketReader, tuple[list[mp.Publish], list[mp.Control]]]:
        """Connect, log in, subscribe; returns the socket, its reader, and anything that came after the CONNACK."""
        s = self.settings
        sock = socket.create_connection((s.host, s.port), timeout=10)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if s.tls is not None:
                sock = s.tls.context().wrap_socket(sock, server_hostname=s.host)
            sock.sendall(mp.connect(self.client_id, s.username, s.password.get_secret_value(), s.keepalive_s))
            reader = mp.PacketReader()
            publishes: list[mp.Publish] = []
            controls: list[mp.Control] = []
            while not controls:   # a broker sends nothing before CONNACK
                data = sock.recv(_READ_BYTES)
                if not data:
                    raise _Gone("closed before CONNACK")
                publishes, controls = reader.feed(data)
            connack = mp.parse_connack(controls[0])
            if connack.refusal:
                raise BrokerRefused(connack.refusal)
            sock.sendall(mp.subscribe(_SUBSCRIBE_ID, self.subscriptions))
            sock.setblocking(False)
        except BaseException:
            self._close(sock)
            raise
        self.connection += 1
        self.unacked = 0   # the broker redelivers the last connection's unacknowledged messages
        log.info("%s: connected (session present: %s)", self.client_id, connack.session_present)
        self.connected.set()
        return sock, reader, (publishes, controls[1:])

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.settimeout(1)
            sock.sendall(mp.DISCONNECT)
        sock.close()

    def _serve(self, sock: socket.socket, reader: mp.PacketReader) -> None:
        keepalive = self.settings.keepalive_s
        window = self.settings.receive_maximum
        live = Liveness(keepalive, time.monotonic())
        pending = b""   # written bytes the socket did not take yet
        while not self._stop.is_set():
            now = time.monotonic()
            if live.dead(now):
                raise _Gone(f"no answer from the broker to a ping for {keepalive} s")
            if not pending and live.ping_due(now):
                pending = mp.PINGREQ
                live.pinged(now)
            pending += self._drain_acks()
            if pending:
                pending = self._write(sock, pending)
                live.last_sent = now
            listening = self.unacked < window
            if not listening:
                live.heard(now)   # not reading: the broker's silence says nothing, and pings still go out
            # An SSL socket may hold decrypted bytes that select cannot see.
            if listening and isinstance(sock, ssl.SSLSocket) and sock.pending():
                readable: list[socket.socket] = [sock]
            else:
                watched = [sock, self._wake_r] if listening else [self._wake_r]
                readable, _, _ = select.select(watched, [sock] if pending else [], [], 1.0)
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
            if sock in readable:
                try:
                    data = sock.recv(_READ_BYTES)
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
                if not data:
                    raise _Gone("the broker closed the connection")
                live.heard(time.monotonic())
                self._take(*reader.feed(data))
                if len(data) < _GATHER_BELOW:
                    time.sleep(_GATHER_S)

    def _drain_acks(self) -> bytes:
        out = []
        connection = self.connection
        acks = self._acks
        while acks:
            r = acks.popleft()
            # A mid is only valid on the connection that delivered it;
            # the broker redelivers the others and dedup recognises them.
            if r.qos and r.connection == connection:
                out.append(mp.puback(r.mid))
        self.unacked -= len(out)
        return b"".join(out)

    @staticmethod
    def _write(sock: socket.socket, data: bytes) -> bytes:
        try:
            sent = sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            return data
        return data[sent:]

    def _take(self, publishes: list[mp.Publish], controls: list[mp.Control]) -> None:
        for c in controls:
            if c.type == mp.SUBACK and (refused := mp.suback_failures(c, self.subscriptions)):
                log.error("%s: the broker refused the subscription to %s (check its ACL)", self.client_id,
                          ", ".join(refused))
        if not publishes:
            return
        received_ms = int(time.time() * 1000)
        connection = self.connection
        fresh: list[ReceivedFields] = []
        unacked = 0
        for topic, payload, packet_id, qos, retain in publishes:
            unacked += qos > 0
            if retain:   # an old message replayed because we subscribed
                self._acks.append(Received(topic, payload, packet_id, qos, received_ms, connection))
            else:
                fresh.append((topic, payload, packet_id, qos, received_ms, connection))
        self.unacked += unacked
        if fresh:
            self.deliver(fresh)

    def _put_each(self, batch: list[ReceivedFields]) -> None:
        put = self.inbox.put
        for fields in batch:
            put(Received(*fields))


def receiving_session(settings: MqttSettings, client_id: str, subscriptions: list[str],
                      inbox: queue.SimpleQueue[Received], protocol: Protocol) -> MqttReceiver | MqttSession:
    """The session that receives telemetry: this module's 3.1.1 receiver, or paho's v5 client."""
    if protocol == "3.1.1":
        return MqttReceiver(settings, client_id, subscriptions, inbox)
    return MqttSession(settings, client_id, subscriptions, inbox)
