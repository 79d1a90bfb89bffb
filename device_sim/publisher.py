"""Paces a generated stream onto a broker: one MQTT connection per device, or one shared connection.

Realistic mode gives each device its own client id and broker account
(username = device id), so the broker's ACL is exercised exactly as with
real watches. Shared mode sends everything over one connection, e.g. as the
`simulator` account.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device_sim.stream import Emitted
from gateway.broker_accounts import Credentials
from gateway.tls import TlsFiles
from gateway.topics import Topics

CONNECT_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class PublishReport:
    published: int  # acknowledged by the broker
    errors: int
    elapsed_s: float

    @property
    def achieved_rate(self) -> float:
        """Acknowledged messages per second."""
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0


class CredentialsError(ValueError):
    """A credentials file that cannot be used."""


def load_device_passwords(path: Path) -> dict[str, str]:
    """device_id -> password from a TOML or JSON file holding one flat table of strings."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as e:
        raise CredentialsError(f"{path}: cannot read device passwords: {e}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise CredentialsError(f"{path}: expected a flat table of device_id = \"password\"")
    return doc


class AckCounter:
    """PUBACKs counted from every connection's network thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = self.failed = 0

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                   properties: Properties) -> None:
        with self.lock:
            if reason_code.is_failure:
                self.failed += 1
            else:
                self.acked += 1


def connect(host: str, port: int, client_id: str, creds: Credentials | None,
            protocol: MQTTProtocolVersion = mqtt.MQTTv5, max_inflight: int = 100,
            on_publish: mqtt.CallbackOnPublish_v2 | None = None, tls: TlsFiles | None = None) -> mqtt.Client:
    """A started client whose CONNACK accepted it; raises ConnectionError otherwise."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    if creds is not None:
        client.username_pw_set(creds.username, creds.password)
    if tls is not None:
        client.tls_set_context(tls.context())
    client.max_inflight_messages_set(max_inflight)
    client.on_publish = on_publish
    result: list[ReasonCode] = []
    ready = threading.Event()

    def on_connect(c: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                   properties: Properties | None) -> None:
        if not reason_code.is_failure:
            # SOS latency: do not let Nagle hold a small publish back. Connected over TCP, paho's socket is a real one.
            cast(socket.socket, c.socket()).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        result.append(reason_code)
        ready.set()

    def on_disconnect(c: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                      properties: Properties | None) -> None:
        # Before any CONNACK: e.g. a TLS 1.3 broker refusing our client certificate after the handshake.
        if not ready.is_set():
            closed.append(reason_code)
            ready.set()

    closed: list[ReasonCode] = []
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port)
    except OSError as e:  # ssl.SSLError too: e.g. the broker's certificate is not from our CA
        raise ConnectionError(f"{client_id}: cannot connect to {host}:{port}: {e}") from None
    client.loop_start()
    if not ready.wait(CONNECT_TIMEOUT_S) or not result or result[0].is_failure:
        client.loop_stop()
        if result:
            why = f"refused the connection: {result[0]}"
        else:
            why = f"closed the connection before accepting it ({closed[0]})" if closed else \
                f"sent no CONNACK within {CONNECT_TIMEOUT_S} s"
        raise ConnectionError(f"{client_id}: broker {host}:{port} {why}")
    return client


def publish_stream(stream: Iterable[Emitted], device_ids: Iterable[str], host: str, port: int, *,
                   shared: Credentials | None = None, passwords: Mapping[str, str] | None = None,
                   speed: float = 1.0, prefix: str = "eldercare", protocol: MQTTProtocolVersion = mqtt.MQTTv5,
                   on_progress: Callable[[int], None] | None = None, tls: TlsFiles | None = None) -> PublishReport:
    """Publish `stream` at `speed` x real time (0: as fast as acknowledgements allow).

    With `passwords`, every device connects as itself; otherwise all share
    one connection with the `shared` account (None: anonymous). With `tls`,
    every connection is TLS and presents its client certificate, if any.
    """
    acks, topics, errors = AckCounter(), Topics(prefix), 0
    clients: dict[str, mqtt.Client] = {}
    sent, start = 0, time.monotonic()
    try:
        if passwords is not None:
            for d in device_ids:
                if d not in passwords:
                    raise ConnectionError(f"no password for device {d!r} in the credentials")
                clients[d] = connect(host, port, d, Credentials(d, passwords[d]), protocol, on_publish=acks.on_publish,
                                     tls=tls)
        else:
            clients["shared"] = connect(host, port, f"device-sim-{time.time_ns() % 10**12}", shared, protocol,
                                        max_inflight=1000, on_publish=acks.on_publish, tls=tls)
        start = time.monotonic()
        for e in stream:
            if speed > 0:
                time.sleep(max(0.0, start + e.t_ms / 1000 / speed - time.monotonic()))
            device = topics.parse(e.topic).device_id if passwords is not None else "shared"
            info = clients[device].publish(e.topic, e.payload, qos=e.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                errors += 1
            else:
                sent += 1
            if on_progress and sent % 100 == 0:
                on_progress(acks.acked)
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while acks.acked + acks.failed < sent and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        for c in clients.values():
            c.disconnect()
            c.loop_stop()
    return PublishReport(acks.acked, errors + acks.failed + (sent - acks.acked - acks.failed), time.monotonic() - start)
