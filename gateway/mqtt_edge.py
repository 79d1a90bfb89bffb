"""The MQTT edge: one persistent MQTT v5 session through paho, its messages converted and queued.

The network thread only converts a paho message into a `Received` and puts
it on the inbox. The inbox needs no bound of its own: messages are
acknowledged only once handled, and the broker stops sending when
`receive_maximum` of them await an ack (MQTT v5 flow control), so that is
the most the inbox ever holds; the backlog waits in the broker, which is
sized for it. Acknowledgement comes from the ingest thread.

The critical session (SOS, fall, service call) uses this, as it also
publishes (the gateway's status, commands to devices). Telemetry, nearly
all of the traffic, goes through the leaner `mqtt_receiver` unless
`[mqtt] telemetry_protocol` asks for v5.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.backoff import Backoff, jitter_down_to_half
from gateway.config import MqttSettings

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

log = logging.getLogger(__name__)
# How long the network thread waits for the broker when nothing else wakes it (`ack` and paho's publish do).
_LOOP_WAIT_S = 1.0

Protocol = Literal["5", "3.1.1"]


@dataclass(slots=True)
class Received:
    """One message as it came off the wire, with what is needed to acknowledge it.

    A value nothing changes; not `frozen`, as one is made for every message and a frozen
    dataclass costs five times as much to make."""

    topic: str
    payload: bytes | bytearray  # paho hands either
    mid: int
    qos: int
    received_ms: int
    connection: int  # which connection delivered it; a mid is only valid on that one

    def fields(self) -> ReceivedFields:
        return (self.topic, self.payload, self.mid, self.qos, self.received_ms, self.connection)


# A Received's fields in order, as a plain tuple: what crosses the pipe from the telemetry child process
# (gateway/edge_process.py), where making the object only to take it apart again would cost a microsecond
# a message. `Received(*fields)` makes it back.
ReceivedFields: TypeAlias = tuple[str, bytes | bytearray, int, int, int, int]


class MqttSession:
    """A persistent session that subscribes on every connect and reconnects by itself."""

    def __init__(self, settings: MqttSettings, client_id: str, subscriptions: list[str], inbox: queue.SimpleQueue[Received],
                 status_topic: str | None = None, on_receive: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.on_receive = on_receive   # called after each message is put in the inbox (network thread)
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.inbox = inbox
        self.status_topic = status_topic
        self.connection = 0
        self.connected = threading.Event()
        self._acks: deque[Received] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        c.username_pw_set(self.settings.username, self.settings.password.get_secret_value())
        if self.settings.tls is not None:
            c.tls_set_context(self.settings.tls.context())
        if self.status_topic:
            c.will_set(self.status_topic, orjson.dumps({"state": "offline", "session": self.client_id}), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        return c

    # -- paho callbacks (network thread) ------------------------------------

    @staticmethod
    def _on_socket_open(client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
        # paho leaves Nagle on; an SOS ack would wait for it under load.
        # The transport is TCP (or TLS over it), so paho's socket is a real one.
        with contextlib.suppress(OSError):
            cast(socket.socket, sock).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            log.error("%s: broker refused the connection: %s", self.client_id, reason_code)
            return
        self.connection += 1
        log.info("%s: connected (session present: %s)", self.client_id, flags.session_present)
        # No retained messages on (re)subscribing: a retained device message is an old reading or an old press,
        # and replayed after the dedup window it would raise a fresh alert. Live messages still arrive.
        client.subscribe([(t, SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
                          for t in self.subscriptions])
        if self.status_topic:
            client.publish(self.status_topic, orjson.dumps({"state": "online", "session": self.client_id}), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("%s: disconnected: %s", self.client_id, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Received(message.topic, message.payload, message.mid, message.qos, int(time.time() * 1000),
                                self.connection))
        if self.on_receive is not None:
            self.on_receive()

    # -- control (any thread) ---------------------------------------------

    def ack(self, batch: Sequence[Received]) -> None:
        """Acknowledge handled messages; the network thread sends the PUBACKs."""
        self._acks.extend(batch)
        self._wake()

    def _wake(self) -> None:
        """End the network thread's wait now. paho's loop also waits on a socket pair of its own, which its
        publish() writes to; a byte there brings the thread round to `_flush_acks` at once."""
        wake = self._client._sockpairW   # None until the first connect: then nothing waits yet
        if wake is not None:
            with contextlib.suppress(OSError):   # full (already awake) or closed by a reconnect
                wake.send(b"\0")

    def _flush_acks(self) -> None:
        """Send queued PUBACKs from the network thread, one socket write for all of them.

        paho's `ack()` called from another thread writes to the socket from
        that thread when paho's own loop thread is not used, racing the
        network thread's writes; so acks are queued and sent here. Holding
        `_in_callback_mutex` stops paho writing each one separately.
        """
        if not self._acks:
            return
        client = self._client
        with client._in_callback_mutex:
            while self._acks:
                r = self._acks.popleft()
                # A mid is only valid on the connection that delivered it;
                # the broker redelivers the others and dedup recognises them.
                if r.qos and r.connection == self.connection:
                    client.ack(r.mid, r.qos)
        client.loop_write()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.status_topic and self.connected.is_set():
            info = self._client.publish(self.status_topic, orjson.dumps({"state": "offline", "session": self.client_id}),
                                        qos=1, retain=True)
            info.wait_for_publish(timeout=2)
        self._client.disconnect()
        if self._thread:
            self._thread.join(timeout=10)

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho's Properties.__init__ is unannotated
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self._client.connect(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
            clean_start=False, properties=props,
        )

    def _run(self) -> None:
        # Jittered so gateways that lost the same broker do not all come back at once.
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s, jitter=jitter_down_to_half)
        while not self._stop.is_set():
            try:
                self._connect()
                backoff.reset()
                while not self._stop.is_set():
                    # `ack` wakes the wait, so it can be long: a short one woke the thread 200 times a
                    # second, each time taking the interpreter from the telemetry lane.
                    rc = self._client.loop(timeout=_LOOP_WAIT_S)
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
                    self._flush_acks()
            except (OSError, mqtt.WebsocketConnectionError) as e:
                log.warning("%s: cannot reach broker %s:%s (%s)", self.client_id, self.settings.host,
                            self.settings.port, e)
            self.connected.clear()
            if not self._stop.is_set():
                self._stop.wait(backoff.next_s())
