"""MQTT 3.1.1 packets for a session that only subscribes and receives: built and parsed, no I/O.

Only what the telemetry receiver needs: CONNECT, SUBSCRIBE, PUBACK, PINGREQ
and DISCONNECT out; CONNACK, SUBACK, PUBLISH (QoS 0 and 1) and PINGRESP in
(OASIS MQTT 3.1.1, sections 2 and 3). `PacketReader` splits a byte stream
into packets in bulk, which is where a general client spends its time: paho
makes a select and several recv calls per packet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

CONNACK, PUBLISH, SUBACK, PINGRESP = 2, 3, 9, 13
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
SUBACK_FAILURE = 0x80
MAX_REMAINING_LENGTH = 268_435_455   # four length bytes

CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class ProtocolError(ValueError):
    """Bytes from the broker that are not MQTT 3.1.1 as this session expects it."""


def _string(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise ValueError(f"string of {len(data)} bytes does not fit an MQTT length prefix")
    return len(data).to_bytes(2, "big") + data


def _packet(first_byte: int, body: bytes) -> bytes:
    n = len(body)
    if n > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet body of {n} bytes is too long for MQTT")
    length = bytearray()
    while True:
        digit, n = n % 128, n // 128
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([first_byte]) + bytes(length) + body


def connect(client_id: str, username: str, password: str, keepalive_s: int, clean_session: bool = False) -> bytes:
    """CONNECT with a user name and password; `clean_session=False` resumes the broker's session for this id."""
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError("keepalive must fit two bytes")
    flags = 0x80 | 0x40 | (0x02 if clean_session else 0)
    body = (_string("MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big")
            + _string(client_id) + _string(username) + _string(password))
    return _packet(0x10, body)


def subscribe(packet_id: int, topic_filters: list[str], qos: int = 1) -> bytes:
    if not topic_filters:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    body = packet_id.to_bytes(2, "big") + b"".join(_string(t) + bytes([qos]) for t in topic_filters)
    return _packet(0x82, body)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


class Publish(NamedTuple):
    """A PUBLISH as received (a tuple: one is made per message, and a tuple is the cheapest to make)."""

    topic: str
    payload: bytes
    packet_id: int   # 0 at QoS 0
    qos: int
    retain: bool     # set by the broker only on a retained message it sends because of a subscription


@dataclass(frozen=True, slots=True)
class Control:
    """Any packet other than PUBLISH: its type (CONNACK, SUBACK, PINGRESP, ...) and body."""

    type: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    return_code: int

    @property
    def refusal(self) -> str | None:
        if self.return_code == 0:
            return None
        return CONNACK_REFUSALS.get(self.return_code, f"return code {self.return_code}")


def parse_connack(packet: Control) -> Connack:
    if packet.type != CONNACK or len(packet.body) != 2:
        raise ProtocolError(f"expected CONNACK, got packet type {packet.type} of {len(packet.body)} bytes")
    return Connack(bool(packet.body[0] & 1), packet.body[1])


def suback_failures(packet: Control, topic_filters: list[str]) -> list[str]:
    """The topic filters a SUBACK refused (the broker's ACL, usually)."""
    codes = packet.body[2:]
    return [t for t, code in zip(topic_filters, codes, strict=False) if code == SUBACK_FAILURE]


class PacketReader:
    """Splits the broker's byte stream into packets; an incomplete packet waits for the next `feed`."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> tuple[list[Publish], list[Control]]:
        buf = self._tail + data if self._tail else data
        n = len(buf)
        pos = 0
        publishes: list[Publish] = []
        controls: list[Control] = []
        while pos + 1 < n:
            first = buf[pos]
            # Remaining length: 1-4 bytes, 7 bits each, low first.
            i = pos + 1
            length = shift = 0
            while True:
                if i >= n:
                    self._tail = buf[pos:]
                    return publishes, controls
                digit = buf[i]
                i += 1
                length |= (digit & 0x7F) << shift
                if digit < 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than four bytes")
            end = i + length
            if end > n:
                break
            kind = first >> 4
            if kind == PUBLISH:
                if length < 2:
                    raise ProtocolError("PUBLISH too short for its topic length")
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                qos = (first >> 1) & 3
                if qos > 1:
                    raise ProtocolError("QoS 2 PUBLISH on a session that subscribed at QoS 1")
                payload_start = topic_end + 2 * qos
                if payload_start > end:
                    raise ProtocolError("PUBLISH topic runs past the packet")
                packet_id = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
                publishes.append(Publish(buf[i + 2:topic_end].decode(errors="replace"), buf[payload_start:end],
                                         packet_id, qos, bool(first & 1)))
            else:
                controls.append(Control(kind, buf[i:end]))
            pos = end
        self._tail = buf[pos:]
        return publishes, controls
