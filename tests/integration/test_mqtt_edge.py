"""The critical session (paho, MQTT v5) against a real Mosquitto: acknowledgements make room for what follows."""
from __future__ import annotations

import queue
import time

from gateway.mqtt_edge import MqttSession, Received
from tests.integration.test_mqtt_receiver import WAIT_S, publish, settings_for, take

SOS = "eldercare/watch/w1/sos"


def test_acknowledged_messages_make_room_for_the_next_through_a_small_receive_window(mosquitto):
    # With ten messages in flight at a time (Receive Maximum 10) the broker sends more only once PUBACKs
    # come, so two hundred arrive only if each window's acknowledgements leave the network thread, which
    # waits up to a second for the broker unless something wakes it (ack() does). Without acknowledgements
    # going out, ten arrive and the test fails. It does not single out ack()'s wake: paho's own writes
    # wake its loop too, and without the wake this still passes, in about 2.6 s instead of 1.2.
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    session = MqttSession(settings_for(mosquitto, receive_maximum=10), "test-critical", [SOS], inbox)
    session.start()
    try:
        assert session.connected.wait(WAIT_S)
        publish(mosquitto, [(SOS, f'{{"seq":{i}}}'.encode()) for i in range(200)])
        got: list[Received] = []
        deadline = time.monotonic() + 10
        while len(got) < 200 and time.monotonic() < deadline:
            window = take(inbox, 10, wait_s=max(0.0, deadline - time.monotonic()))
            got += window
            time.sleep(0.05)      # the network thread has read the whole window and waits for the broker again
            session.ack(window)
        assert [r.payload for r in got] == [f'{{"seq":{i}}}'.encode() for i in range(200)]
    finally:
        session.stop()
