"""The MQTT edge: one persistent MQTT v5 session, paho's messages converted and queued.

The network thread only converts a paho message into a `Received` and puts
it on a bounded queue (blocking when ingest falls behind, which stops
reading the socket: backpressure reaches the broker, whose queue is
sized for it). Acknowledgement is manual and comes from the ingest thread
once a message is durably handled.
"""
from __future__ import annotations

import logging
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import MqttSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    """One message as it came off the wire, with what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    connection: int  # which connection delivered it; a mid is only valid on that one


def backoff_delays(min_s: float, max_s: float):
    """Exponential backoff with full jitter: 0.5x-1x of min, 2*min, 4*min ... capped at max."""
    delay = min_s
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(delay * 2, max_s)


class MqttSession:
    """A persistent session that subscribes on every connect and reconnects by itself."""

    def __init__(self, settings: MqttSettings, client_id: str, subscriptions: list[str], inbox: queue.Queue,
                 status_topic: str | None = None) -> None:
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = [
            f"$share/{settings.shared_group}/{t}" if settings.shared_group else t for t in subscriptions
        ]
        self.inbox = inbox
        self.status_topic = status_topic
        self.connection = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True,
        )
        c.username_pw_set(self.settings.username, self.settings.password.get_secret_value())
        if self.status_topic:
            c.will_set(self.status_topic, orjson.dumps({"state": "offline", "session": self.client_id}), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        return c

    # -- paho callbacks (network thread) ------------------------------------

    @staticmethod
    def _on_socket_open(client, userdata, sock) -> None:
        # paho leaves Nagle on; an SOS ack would wait for it under load.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("%s: broker refused the connection: %s", self.client_id, reason_code)
            return
        self.connection += 1
        log.info("%s: connected (session present: %s)", self.client_id, flags.session_present)
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.subscriptions])
        if self.status_topic:
            client.publish(self.status_topic, orjson.dumps({"state": "online", "session": self.client_id}), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("%s: disconnected: %s", self.client_id, reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Received(
            message.topic, message.payload, message.mid, message.qos, int(time.time() * 1000), self.connection,
        ))

    # -- control (any thread) ---------------------------------------------

    def ack(self, received: Received) -> None:
        """Acknowledge to the broker, if the connection that delivered it is still the current one."""
        if received.qos and received.connection == self.connection:
            self._client.ack(received.mid, received.qos)
        # Otherwise the broker redelivers it on the new connection, where
        # the dedup keys recognise it.

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
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self._client.connect(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
            clean_start=False, properties=props,
        )

    def _run(self) -> None:
        delays = backoff_delays(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        while not self._stop.is_set():
            try:
                self._connect()
                delays = backoff_delays(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
                while not self._stop.is_set():
                    rc = self._client.loop(timeout=0.5)
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
            except (OSError, mqtt.WebsocketConnectionError) as e:
                log.warning("%s: cannot reach broker %s:%s (%s)", self.client_id, self.settings.host,
                            self.settings.port, e)
            self.connected.clear()
            if not self._stop.is_set():
                self._stop.wait(next(delays))
