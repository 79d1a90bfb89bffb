"""The telemetry receiver against a real Mosquitto: the session, acknowledgement and reconnection it promises."""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import MqttSettings
from gateway.mqtt_edge import Received
from gateway.mqtt_receiver import MqttReceiver

WAIT_S = 20
TOPIC = "eldercare/watch/w1/location"


def settings_for(broker, **overrides) -> MqttSettings:
    options = {"host": broker.host, "port": broker.port, "username": broker.gateway.username,
               "password": broker.gateway.password, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    return MqttSettings(**(options | overrides))


def publish(broker, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish at QoS 1 as the simulator and wait for every PUBACK."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    c.username_pw_set(broker.simulator.username, broker.simulator.password)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for info in [c.publish(t, p, qos=1, retain=retain) for t, p in messages]:
            info.wait_for_publish(WAIT_S)
    finally:
        c.disconnect()
        c.loop_stop()


def take(inbox: queue.SimpleQueue[Received], count: int, wait_s: float = WAIT_S) -> list[Received]:
    got = []
    deadline = time.monotonic() + wait_s
    while len(got) < count and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            got.append(inbox.get(timeout=0.1))
    return got


def numbered(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(TOPIC, f'{{"seq":{i}}}'.encode()) for i in range(start, start + n)]


@pytest.fixture
def receivers():
    """Makes receivers and stops every one the test started."""
    made: list[MqttReceiver] = []

    def make(broker, client_id: str = "test-telemetry", **overrides) -> tuple[MqttReceiver, queue.SimpleQueue[Received]]:
        inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        r = MqttReceiver(settings_for(broker, **overrides), client_id, ["eldercare/#"], inbox)
        made.append(r)
        r.start()
        return r, inbox

    yield make
    for r in made:
        r.stop()


def test_what_is_published_while_the_receiver_is_away_arrives_when_it_returns(mosquitto, receivers):
    first, _ = receivers(mosquitto)
    assert first.connected.wait(WAIT_S)
    first.stop()
    publish(mosquitto, numbered(300))
    _, inbox = receivers(mosquitto)
    got = take(inbox, 300)
    assert [r.payload for r in got] == [p for _, p in numbered(300)]
    assert {(r.topic, r.qos) for r in got} == {(TOPIC, 1)}


def test_only_acknowledged_messages_are_gone_after_a_reconnect(mosquitto, receivers):
    first, inbox = receivers(mosquitto)
    assert first.connected.wait(WAIT_S)
    publish(mosquitto, numbered(10))
    got = take(inbox, 10)
    assert len(got) == 10
    first.ack(got[:4])
    time.sleep(0.5)   # the PUBACKs leave from the receiver's thread
    first.stop()
    second, again = receivers(mosquitto)
    redelivered = take(again, 6)
    assert sorted(r.payload for r in redelivered) == sorted(p for _, p in numbered(6, start=4))
    assert all(r.connection == second.connection for r in redelivered)
    assert take(again, 1, wait_s=1.5) == [], "an acknowledged message came back"


def test_an_ack_for_a_message_of_an_earlier_connection_is_not_sent_on_the_new_one(mosquitto, receivers):
    receiver, inbox = receivers(mosquitto)
    assert receiver.connected.wait(WAIT_S)
    publish(mosquitto, numbered(3))
    old = take(inbox, 3)
    mosquitto.stop()   # the broker keeps the session on disk: the three come back, unacknowledged
    mosquitto.start()
    redelivered = take(inbox, 3)
    assert sorted(r.payload for r in redelivered) == sorted(r.payload for r in old)
    assert {r.connection for r in redelivered} == {old[0].connection + 1}
    receiver.ack(old)              # mids of the first connection: ignored
    receiver.ack(redelivered)      # these are the ones that count
    time.sleep(0.5)
    receiver.stop()
    third, after = receivers(mosquitto)
    assert third.connected.wait(WAIT_S)
    publish(mosquitto, numbered(1, start=99))
    assert [r.payload for r in take(after, 1)] == [b'{"seq":99}']


def test_a_retained_message_sent_because_of_the_subscription_is_dropped_and_acknowledged(mosquitto, receivers):
    publish(mosquitto, [(TOPIC, b'{"old":true}')], retain=True)
    receiver, inbox = receivers(mosquitto)
    assert receiver.connected.wait(WAIT_S)
    publish(mosquitto, numbered(1))
    assert [r.payload for r in take(inbox, 2, wait_s=3)] == [b'{"seq":0}']


def test_a_refused_login_is_logged_and_retried_without_connecting(mosquitto, receivers, caplog):
    caplog.set_level(logging.ERROR, logger="gateway.mqtt_receiver")
    receiver, _ = receivers(mosquitto, password="wrong")
    assert not receiver.connected.wait(2)
    refusals = [r.message for r in caplog.records if "refused the connection" in r.message]
    assert len(refusals) >= 2, refusals   # it keeps trying, with backoff
    assert "not authorised" in refusals[0] or "bad user name or password" in refusals[0]


def test_an_idle_session_stays_connected_through_its_keepalive(mosquitto, receivers):
    """Mosquitto drops a client silent for 1.5 keepalives; the receiver's PINGREQs keep it."""
    receiver, inbox = receivers(mosquitto, keepalive_s=5)
    assert receiver.connected.wait(WAIT_S)
    connection = receiver.connection
    time.sleep(9)
    publish(mosquitto, numbered(1))
    (r,) = take(inbox, 1)
    assert r.connection == connection == receiver.connection


def test_a_burst_acknowledged_from_another_thread_is_received_whole_and_not_redelivered(mosquitto, receivers):
    """The ingest thread acknowledges while the receiver's thread reads: 20,000 messages, none lost or repeated."""
    receiver, inbox = receivers(mosquitto)
    assert receiver.connected.wait(WAIT_S)
    total = 20_000
    got: list[Received] = []

    def acknowledge() -> None:
        deadline = time.monotonic() + 120
        while len(got) < total and time.monotonic() < deadline:
            batch = take_available(inbox)
            got.extend(batch)
            receiver.ack(batch)

    acker = threading.Thread(target=acknowledge)
    acker.start()
    publish(mosquitto, numbered(total))
    acker.join()
    assert sorted(int(r.payload[7:-1]) for r in got) == list(range(total))
    time.sleep(0.5)
    receiver.stop()
    again, inbox2 = receivers(mosquitto)
    assert again.connected.wait(WAIT_S)
    assert take(inbox2, 1, wait_s=1.5) == []


def take_available(inbox: queue.SimpleQueue[Received]) -> list[Received]:
    try:
        batch = [inbox.get(timeout=0.05)]
    except queue.Empty:
        return []
    while True:
        try:
            batch.append(inbox.get_nowait())
        except queue.Empty:
            return batch


def test_a_backlog_waits_in_the_broker_while_receive_maximum_messages_are_unacknowledged(mosquitto, receivers):
    """A restart after an outage: the broker holds 3,000 messages of 1 KiB. Unacknowledged, the receiver holds about
    receive_maximum of them (plus at most what one read brought); acknowledging lets the rest through, all of them,
    in order, with no reconnect."""
    first, _ = receivers(mosquitto)
    assert first.connected.wait(WAIT_S)
    first.stop()
    total, window = 3_000, 100
    filler = b" " * 1000
    publish(mosquitto, [(TOPIC, b'{"seq":%d}' % i + filler) for i in range(total)])
    receiver, inbox = receivers(mosquitto, receive_maximum=window)
    held = take(inbox, total, wait_s=2)
    assert window <= len(held) < 600, f"{len(held)} messages held unacknowledged with a window of {window}"
    assert receiver.unacked == len(held)
    got = list(held)
    deadline = time.monotonic() + 60
    while len(got) < total and time.monotonic() < deadline:
        receiver.ack(held)
        held = take_available(inbox)
        assert receiver.unacked <= len(held) + 600
        got.extend(held)
    receiver.ack(held)
    assert [int(r.payload[7:r.payload.index(b"}")]) for r in got] == list(range(total))
    assert {r.connection for r in got} == {receiver.connection}
