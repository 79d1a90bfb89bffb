"""MQTT 3.1.1 packets as the telemetry receiver builds and reads them (byte layouts from the OASIS standard)."""
from __future__ import annotations

import pytest

from gateway import mqtt_packets as mp


def publish_bytes(topic: str, payload: bytes, packet_id: int = 0, qos: int = 1, retain: bool = False,
                  dup: bool = False) -> bytes:
    """A PUBLISH as a broker sends it, built independently of the module under test."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(length) + body


def test_connect_carries_protocol_level_4_credentials_keepalive_and_a_persistent_session():
    packet = mp.connect("gw-telemetry", "gateway", "s3cret", 30)
    body = (b"\x00\x04MQTT" + bytes([4, 0xC0]) + (30).to_bytes(2, "big") + b"\x00\x0cgw-telemetry"
            + b"\x00\x07gateway" + b"\x00\x06s3cret")
    assert packet == bytes([0x10, len(body)]) + body


def test_a_clean_session_sets_its_flag():
    assert mp.connect("c", "u", "p", 30, clean_session=True)[9] == 0xC2


def test_subscribe_asks_qos_1_for_every_filter_with_the_reserved_flags():
    packet = mp.subscribe(7, ["eldercare/#", "x/+/y"])
    assert packet == (b"\x82" + bytes([2 + 14 + 8]) + b"\x00\x07" + b"\x00\x0beldercare/#\x01"
                      + b"\x00\x05x/+/y\x01")


def test_a_long_body_gets_a_multi_byte_remaining_length():
    password = "p" * 300
    packet = mp.connect("c", "u", password, 30)
    body_length = len(packet) - 3
    assert packet[1] == (body_length % 128) | 0x80 and packet[2] == body_length // 128


def test_puback_echoes_the_packet_id():
    assert mp.puback(0x1234) == b"\x40\x02\x12\x34"


def test_publishes_and_controls_come_out_of_one_read_in_order():
    data = (b"\x20\x02\x01\x00"                                   # CONNACK, session present
            + publish_bytes("eldercare/watch/w1/location", b'{"seq":1}', packet_id=1)
            + b"\x90\x03\x00\x01\x01"                              # SUBACK granting QoS 1
            + publish_bytes("eldercare/watch/w1/health", b"{}", packet_id=2, retain=True)
            + publish_bytes("t", b"zero", qos=0)
            + b"\xd0\x00")                                         # PINGRESP
    publishes, controls = mp.PacketReader().feed(data)
    assert publishes == [mp.Publish("eldercare/watch/w1/location", b'{"seq":1}', 1, 1, False),
                         mp.Publish("eldercare/watch/w1/health", b"{}", 2, 1, True),
                         mp.Publish("t", b"zero", 0, 0, False)]
    assert [c.type for c in controls] == [mp.CONNACK, mp.SUBACK, mp.PINGRESP]
    assert mp.parse_connack(controls[0]) == mp.Connack(session_present=True, return_code=0)


def test_a_stream_cut_anywhere_gives_the_same_packets():
    big = bytes(range(256)) * 3   # a payload long enough for a two-byte remaining length
    stream = b"".join(publish_bytes(f"eldercare/watch/w{i}/location", big[: 40 * i], packet_id=i + 1)
                      for i in range(1, 12))
    whole, _ = mp.PacketReader().feed(stream)
    assert len(whole) == 11
    for cut in range(1, len(stream), 37):
        reader = mp.PacketReader()
        first, _ = reader.feed(stream[:cut])
        rest, _ = reader.feed(stream[cut:])
        assert first + rest == whole, f"cut at byte {cut}"


def test_a_stream_fed_one_byte_at_a_time_loses_nothing():
    stream = publish_bytes("a/b", b"x" * 200, packet_id=9) + b"\xd0\x00"
    reader = mp.PacketReader()
    publishes, controls = [], []
    for i in range(len(stream)):
        p, c = reader.feed(stream[i:i + 1])
        publishes += p
        controls += c
    assert publishes == [mp.Publish("a/b", b"x" * 200, 9, 1, False)]
    assert [c.type for c in controls] == [mp.PINGRESP]


def test_a_topic_that_is_not_utf8_does_not_stop_the_reader():
    (p,), _ = mp.PacketReader().feed(b"\x30\x04\x00\x01\xff1")
    assert (p.topic, p.payload) == ("\ufffd", b"1")


@pytest.mark.parametrize("data, why", [
    (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
    (b"\x30\x01\x00", "too short"),
    (b"\x32\x05\x00\x09abc", "past the packet"),
    (publish_bytes("t", b"", packet_id=1, qos=2), "QoS 2"),
])
def test_malformed_packets_are_protocol_errors(data, why):
    with pytest.raises(mp.ProtocolError, match=why):
        mp.PacketReader().feed(data)


def test_connack_refusals_are_named():
    assert mp.parse_connack(mp.Control(mp.CONNACK, b"\x00\x05")).refusal == "not authorised"
    assert mp.parse_connack(mp.Control(mp.CONNACK, b"\x00\x04")).refusal == "bad user name or password"
    assert mp.parse_connack(mp.Control(mp.CONNACK, b"\x00\x00")).refusal is None
    with pytest.raises(mp.ProtocolError):
        mp.parse_connack(mp.Control(mp.PINGRESP, b""))


def test_suback_names_the_refused_filters():
    suback = mp.Control(mp.SUBACK, b"\x00\x01\x01\x80")
    assert mp.suback_failures(suback, ["a/#", "b/#"]) == ["b/#"]
