"""The simulator against a real Mosquitto: scenarios arrive as generated, the ACL holds, load mode keeps its rate."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter

from device_sim.cli import main as device_sim
from device_sim.load import run_load
from device_sim.publisher import AckCounter, connect, publish_stream
from device_sim.scenario import parse_scenario
from device_sim.stream import generate
from tests.fixtures.gateway_proc import Publisher, connected_client, subscribe, wait_until

SCENARIO_TEXT = """
duration = "10m"
start_time = "09:00"
[fleet]
watches = 2
equipment = ["rower"]
[[events]]
at = "1m"
device = "watch-0001"
action = "sos"
[[events]]
at = "1m20s"
device = "watch-0001"
action = "sos"
[[events]]
at = "2m"
device = "watch-0002"
action = "fall"
[[events]]
at = "3m"
device = "watch-0002"
action = "malformed"
kind = "bad_json"
[[events]]
at = "4m"
device = "watch-0001"
action = "malformed"
kind = "lat_out_of_range"
"""
SCENARIO = parse_scenario(SCENARIO_TEXT, "broker-test.toml")


class Subscriber:
    """The gateway account reading everything at QoS 1, subscribed before anything is published."""

    def __init__(self, broker, client_id: str = "sim-test-subscriber") -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        self.client = connected_client(broker, broker.gateway, client_id, self._on_message)
        subscribe(self.client, "eldercare/#")

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_scenario_arrives_as_generated_with_its_sos_fall_and_malformed_messages(mosquitto):
    devices = [d for d, _ in SCENARIO.devices]
    passwords = {d: mosquitto.add_device(d).password for d in devices}
    sub = Subscriber(mosquitto)
    expected = list(generate(SCENARIO, 11, int(time.time() * 1000)))
    report = publish_stream(iter(expected), devices, mosquitto.host, mosquitto.port, passwords=passwords, speed=0)
    wait_until(lambda: sub.count() >= len(expected), 30, "every message at the subscriber")
    sub.close()
    assert (report.published, report.errors) == (len(expected), 0)
    assert Counter(sub.messages) == Counter((e.topic, e.payload) for e in expected)
    topics = Counter(topic for topic, _ in sub.messages)
    assert topics["eldercare/watch/watch-0001/sos"] == 2
    assert topics["eldercare/watch/watch-0002/fall"] == 1
    bad_json = [p for t, p in sub.messages if t == "eldercare/watch/watch-0002/status" and not p.endswith(b"}")]
    assert len(bad_json) == 1
    assert any(b'"lat":200.0' in p for t, p in sub.messages if t == "eldercare/watch/watch-0001/location")


def test_a_scenario_can_share_one_simulator_connection(mosquitto):
    sub = Subscriber(mosquitto)
    expected = list(generate(SCENARIO, 12, int(time.time() * 1000)))
    report = publish_stream(iter(expected), (), mosquitto.host, mosquitto.port, shared=mosquitto.simulator, speed=0)
    wait_until(lambda: sub.count() >= len(expected), 30, "every message at the subscriber")
    sub.close()
    assert (report.published, report.errors) == (len(expected), 0)
    assert [m for m in sub.messages] == [(e.topic, e.payload) for e in expected]


def test_a_run_played_in_parts_with_one_start_time_sends_exactly_what_one_run_sends(mosquitto, tmp_path):
    """The demo stops between parts to act on the gateway; the devices' ts and seq carry on as if it had not."""
    scenario_file, credentials = tmp_path / "parts.toml", tmp_path / "devices.json"
    scenario_file.write_text(SCENARIO_TEXT)
    credentials.write_text(json.dumps({d: mosquitto.add_device(d).password for d, _ in SCENARIO.devices}))
    start_ms = int(time.time() * 1000) - 600_000
    sub = Subscriber(mosquitto)
    for part in (["--until", "1m20s"], ["--from", "1m20s", "--until", "200"], ["--from", "200"]):
        assert device_sim(["run", "--scenario", str(scenario_file), "--seed", "14", "--speed", "0", "--port",
                           str(mosquitto.port), "--credentials-file", str(credentials), "--start-ms", str(start_ms),
                           *part]) == 0
    expected = list(generate(SCENARIO, 14, start_ms))
    wait_until(lambda: sub.count() >= len(expected), 30, "every message at the subscriber")
    sub.close()
    assert Counter(sub.messages) == Counter((e.topic, e.payload) for e in expected)


def test_a_device_connection_cannot_publish_as_another_device(mosquitto):
    alice = mosquitto.add_device("watch-0001")
    mosquitto.add_device("watch-0002")
    sub = Subscriber(mosquitto)
    forged = next(e for e in generate(SCENARIO, 13, int(time.time() * 1000)) if "/watch-0002/" in e.topic)
    acks = AckCounter()
    device = connect(mosquitto.host, mosquitto.port, "watch-0001", alice, on_publish=acks.on_publish)
    device.publish(forged.topic, forged.payload, qos=1)
    wait_until(lambda: acks.acked + acks.failed == 1, 10, "the broker's answer to the forged publish")
    device.loop_stop()
    assert (acks.acked, acks.failed) == (0, 1)
    # A new connection's own message arrives after anything the first could have delivered.
    device = connect(mosquitto.host, mosquitto.port, "watch-0001", alice, on_publish=acks.on_publish)
    device.publish("eldercare/watch/watch-0001/status", forged.payload, qos=1).wait_for_publish(10)
    wait_until(lambda: sub.count() >= 1, 10, "the device's own message")
    device.loop_stop()
    sub.close()
    assert [t for t, _ in sub.messages] == ["eldercare/watch/watch-0001/status"]


def test_load_mode_keeps_the_requested_rate_and_every_acknowledged_message_arrives(mosquitto):
    sub = Subscriber(mosquitto, "sim-load-counter")
    report = run_load(mosquitto.host, mosquitto.port, mosquitto.simulator.username, mosquitto.simulator.password,
                      devices=1000, rate=2000, duration=4, processes=2)
    # Every load message was acknowledged, so the broker queued it to us before this marker.
    marker = ("eldercare/watch/marker/status", b"end of load")
    publisher = Publisher(mosquitto, mosquitto.gateway, client_id="sim-load-marker")
    publisher.publish(*marker)
    publisher.wait_all()
    publisher.close()
    wait_until(lambda: marker in sub.messages, 30, "the subscriber to catch up to the marker")
    sub.close()
    sub.messages.remove(marker)
    assert report.errors == 0
    assert report.published == 8000
    assert abs(report.achieved_rate - 2000) <= 200
    assert sub.count() == report.published
    devices = {t.split("/")[2] for t, _ in sub.messages}
    assert len(devices) == 1000
    streams = Counter(t.rsplit("/", 1)[1] for t, _ in sub.messages)
    assert set(streams) == {"status", "location", "health"}
