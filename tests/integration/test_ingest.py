"""Ingest against a real Mosquitto and a real VictoriaMetrics."""
from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from tests.fixtures.gateway_proc import Publisher, connected_client, location, register, subscribe, wait_until

VALID_PER_DEVICE = 20
DEVICES = ("w-ingest-1", "w-ingest-2", "w-ingest-3")


def test_every_valid_message_reaches_the_store_and_every_invalid_one_is_dead_lettered(
        gateway_in_process, mosquitto, victoria):
    gw = gateway_in_process
    register(gw.store, *DEVICES)
    register(gw.store, "rower-1", kind="equipment")
    base = int(time.time() * 1000) - 60_000
    pub = Publisher(mosquitto, mosquitto.gateway)
    for device in DEVICES:
        for seq in range(1, VALID_PER_DEVICE + 1):
            pub.publish(f"eldercare/watch/{device}/location", location(seq, base))
    pub.publish("eldercare/watch/w-ingest-1/status",
                {"ts": base + 500, "seq": 500, "battery": 80, "worn": True, "steps": 1200})
    pub.publish("eldercare/watch/w-ingest-2/health", {"ts": base + 501, "seq": 501, "heart_rate": 72})
    pub.publish("eldercare/watch/w-ingest-3/sos", {"ts": base + 502, "seq": 502, "lat": 31.2, "lon": 121.4})
    pub.publish("eldercare/equipment/rower-1/session",
                {"ts": base + 503, "seq": 1, "event": "start", "session_id": "s 1", "equipment_type": "rower"})
    invalid = {
        "bad_json": ("eldercare/watch/w-ingest-1/health", b"{not json"),
        "not_an_object": ("eldercare/watch/w-ingest-1/health", b"[1, 2, 3]"),
        "missing_field": ("eldercare/watch/w-ingest-1/location", {"seq": 900, "lat": 1, "lon": 1, "accuracy_m": 1}),
        "invalid_field": ("eldercare/watch/w-ingest-2/location",
                          {"ts": base, "seq": 901, "lat": 200, "lon": 1, "accuracy_m": 1}),
        "too_large": ("eldercare/watch/w-ingest-2/status", b"{" + b" " * 1_000_000 + b"}"),
        "unknown_stream": ("eldercare/watch/w-ingest-3/toaster", {"ts": base, "seq": 902}),
        "unknown_device": ("eldercare/watch/w-stranger/location", location(903, base)),
        "device_mismatch": ("eldercare/watch/w-ingest-3/health",
                            {"ts": base, "seq": 904, "heart_rate": 70, "device_id": "w-ingest-1"}),
    }
    for topic, payload in invalid.values():
        pub.publish(topic, payload)
    for bad_hr in (-5, 400):
        pub.publish("eldercare/watch/w-ingest-3/health", {"ts": base, "seq": 905 + bad_hr, "heart_rate": bad_hr})
    pub.wait_all()
    pub.close()

    expected_accepted = len(DEVICES) * VALID_PER_DEVICE + 4
    wait_until(lambda: sum(w.pipeline.stats.accepted for _, w in gw.lanes) >= expected_accepted
               and sum(gw.store.dead_letter_counts().values()) >= len(invalid) + 2, 30, "ingest to finish")

    assert victoria.wait_for_samples('{__name__="location_seq"}', expected=len(DEVICES) * VALID_PER_DEVICE) == 60
    for device in DEVICES:
        series = victoria.export(f'{{__name__="location_seq",device_id="{device}"}}')
        assert sorted(series[0]["values"]) == list(range(1, VALID_PER_DEVICE + 1))
    assert victoria.wait_for_samples('{__name__="status_battery"}', 1) == 1
    assert victoria.wait_for_samples('{__name__="health_heart_rate"}', 1) == 1
    assert victoria.wait_for_samples('{__name__="sos_seq"}', 1) == 1
    session = victoria.export('{__name__="session_seq"}')
    assert session[0]["metric"]["equipment_type"] == "rower" and "session_id" not in session[0]["metric"]
    assert gw.store.exercise_session("rower-1", "s 1").equipment_type == "rower"   # the session is in the store

    counts = gw.store.dead_letter_counts()
    assert counts == {reason: 1 for reason in invalid} | {"invalid_field": 3}  # + heart rate -5 and 400
    too_large = gw.store.dead_letters("too_large")[0]
    assert too_large.payload_size > 1_000_000 and len(too_large.payload) <= 1024

    state = gw.store.last_state("w-ingest-1")
    assert state["battery"] == 80 and state["position_ts"] == base + VALID_PER_DEVICE
    assert [ts for ts, _, _ in gw.store.track("w-ingest-2")] == [base + s for s in range(1, VALID_PER_DEVICE + 1)]


def test_a_redelivered_message_is_written_once(gateway_in_process, mosquitto, victoria):
    gw = gateway_in_process
    register(gw.store, "w-dup")
    base = int(time.time() * 1000) - 10_000
    pub = Publisher(mosquitto, mosquitto.gateway)
    for seq in (1, 2, 2, 3, 1, 3):
        pub.publish("eldercare/watch/w-dup/location", location(seq, base))
    pub.wait_all()
    pub.close()
    wait_until(lambda: sum(w.pipeline.stats.accepted + w.pipeline.stats.duplicates for _, w in gw.lanes) >= 6,
               30, "all six to be handled")
    assert sum(w.pipeline.stats.duplicates for _, w in gw.lanes) == 3
    assert victoria.wait_for_samples('{__name__="location_seq",device_id="w-dup"}', 3) == 3
    assert gw.store.seen_count() == 3


def test_a_watch_account_publishing_as_equipment_is_dead_lettered_and_raises_no_alert(gateway_process, mosquitto):
    """The ACL lets a device write under its own id at any kind level; the registry knows it is a watch."""
    from tests.fixtures.alert_e2e import query

    gateway = gateway_process()
    register(gateway.store, "watch-0001")   # worn by r-001 (examples/community.toml)
    gateway.start()
    watch = Publisher(mosquitto, mosquitto.add_device("watch-0001"), client_id="watch-0001")
    base = int(time.time() * 1000) - 60_000
    for seq in range(1, 6):
        watch.publish("eldercare/equipment/watch-0001/telemetry",
                      {"ts": base + seq, "seq": seq, "session_id": "s1", "elapsed_s": 60 * seq, "count": 30 * seq,
                       "energy_kcal": 5.0 * seq, "heart_rate": 190})
    watch.publish("eldercare/watch/watch-0001/health", {"ts": base + 6, "seq": 6, "heart_rate": 72})  # sent last
    watch.wait_all()
    watch.close()
    wait_until(lambda: (gateway.store.last_state("watch-0001") or {}).get("heart_rate") == 72, 30,
               "the watch's own reading, published after the forged ones")
    gateway.stop()
    assert gateway.store.dead_letter_counts() == {"kind_mismatch": 5}
    assert gateway.store.dead_letters()[0].detail == "device 'watch-0001' is registered as watch, not equipment"
    assert query(gateway, "SELECT alert_type FROM alerts") == []


def _subscriber(broker, received: list[str]) -> mqtt.Client:
    c = connected_client(broker, broker.gateway, "acl-watcher", lambda client, u, msg: received.append(msg.topic))
    subscribe(c, "eldercare/#")
    return c


def _publish_answer(broker, credentials, client_id: str, topic: str) -> list[int]:
    """The reason codes of the broker's PUBACK to one QoS 1 publish."""
    acks: list[int] = []
    client = connected_client(broker, credentials, client_id)
    client.on_publish = lambda c, userdata, mid, reason, props: acks.append(reason.value)
    client.publish(topic, b'{"ts": 1795000000000, "seq": 1}', qos=1)
    wait_until(lambda: acks, 10, f"the broker's answer to a publish on {topic}")
    client.loop_stop()
    return acks


def test_a_device_cannot_publish_under_another_device_id(mosquitto):
    alice = mosquitto.add_device("watch-alice")
    mosquitto.add_device("watch-bob")
    received: list[str] = []
    watcher = _subscriber(mosquitto, received)
    assert _publish_answer(mosquitto, alice, "watch-alice", "eldercare/watch/watch-bob/sos") == [0x87]  # "Not authorized"
    # The broker drops a client after a refused publish; a new connection's
    # message arrives after anything the first one could have delivered.
    device = connected_client(mosquitto, alice, "watch-alice")
    device.publish("eldercare/watch/watch-alice/sos", b'{"ts": 1795000000000, "seq": 2}', qos=1).wait_for_publish(10)
    wait_until(lambda: "eldercare/watch/watch-alice/sos" in received, 10, "the device's own message")
    device.loop_stop()
    watcher.loop_stop()
    assert "eldercare/watch/watch-bob/sos" not in received
    assert received.count("eldercare/watch/watch-alice/sos") == 1


@pytest.mark.parametrize("topic", ["eldercare/watch/watch-carol/cmd", "eldercare/watch/watch-dave/cmd"])
def test_a_device_reads_only_its_own_command_topic(mosquitto, topic):
    carol = mosquitto.add_device("watch-carol")
    got: list[tuple[str, bytes]] = []
    device = connected_client(mosquitto, carol, "watch-carol", lambda c, u, m: got.append((m.topic, m.payload)))
    subscribe(device, "eldercare/watch/+/cmd")
    gw = Publisher(mosquitto, mosquitto.gateway, client_id="cmd-sender")
    gw.publish(topic, b'{"cmd": "locate"}')
    gw.publish("eldercare/watch/watch-carol/cmd", b'{"cmd": "marker"}')  # one sender, so it arrives last
    gw.wait_all()
    wait_until(lambda: ("eldercare/watch/watch-carol/cmd", b'{"cmd": "marker"}') in got, 10, "the marker command")
    device.loop_stop()
    gw.close()
    topics = [t for t, _ in got]
    assert topics.count("eldercare/watch/watch-carol/cmd") == (2 if topic.endswith("carol/cmd") else 1)
    assert "eldercare/watch/watch-dave/cmd" not in topics


def test_the_production_acl_lets_no_simulator_account_write_as_a_device(production_mosquitto):
    broker = production_mosquitto
    broker.add_device("watch-alice")
    received: list[str] = []
    watcher = _subscriber(broker, received)
    assert _publish_answer(broker, broker.simulator, "load-sim", "eldercare/watch/watch-alice/sos") == [0x87]
    watcher.loop_stop()
    assert received == []


def test_a_device_writes_only_at_the_topic_schemes_depth(production_mosquitto):
    alice = production_mosquitto.add_device("watch-alice")
    received: list[str] = []
    watcher = _subscriber(production_mosquitto, received)
    assert _publish_answer(production_mosquitto, alice, "watch-alice", "eldercare/watch/watch-alice/sos/extra") == [0x87]
    assert _publish_answer(production_mosquitto, alice, "watch-alice", "eldercare/watch/watch-alice/sos") == [0]
    wait_until(lambda: received, 10, "the device's own message")
    watcher.loop_stop()
    assert received == ["eldercare/watch/watch-alice/sos"]


def test_a_retained_sos_is_never_replayed_as_a_new_press_but_a_live_one_still_counts(gateway_process, mosquitto):
    """A device may publish with the retain flag; the broker would hand that old message to every new
    subscription, and after the dedup window it would be a fresh alert. The gateway asks for no retained
    messages when it subscribes; a live message with the flag is delivered as usual."""
    gateway = gateway_process()
    register(gateway.store, "w-retained", "w-marker")
    pub = Publisher(mosquitto, mosquitto.add_device("w-retained"), client_id="w-retained")
    old = int(time.time() * 1000) - 3_600_000
    pub.publish("eldercare/watch/w-retained/sos", {"ts": old, "seq": 1, "lat": 31.2, "lon": 121.4}, retain=True)
    pub.wait_all()   # kept by the broker, before the gateway ever subscribed
    gateway.start()
    # A marker on the same (critical) session: a replay would have been delivered before it.
    marker = Publisher(mosquitto, mosquitto.add_device("w-marker"), client_id="w-marker")
    marker.publish("eldercare/watch/w-marker/sos", {"ts": old + 5, "seq": 1, "lat": 31.2, "lon": 121.4})
    marker.wait_all()
    marker.close()
    wait_until(lambda: gateway.store.already_seen([("w-marker", old + 5, 1)]) != set(), 30, "the marker")
    assert gateway.store.already_seen([("w-retained", old, 1)]) == set()   # the old press never came
    assert gateway.store.seen_count() == 1 and gateway.store.dead_letter_counts() == {}
    pub.publish("eldercare/watch/w-retained/sos", {"ts": old + 10, "seq": 3, "lat": 31.2, "lon": 121.4}, retain=True)
    pub.wait_all()
    wait_until(lambda: gateway.store.already_seen([("w-retained", old + 10, 3)]) != set(), 30, "the live press")
    pub.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_retained_reading_is_not_replayed_into_the_telemetry_session_whichever_mqtt_version(
        gateway_process, mosquitto, protocol):
    """A watch whose status was retained long ago would otherwise look heard at every gateway start (and its
    stale reading judged again after the dedup window). MQTT 3.1.1 cannot refuse retained messages at
    subscribe time, so the edge acknowledges and drops the ones the broker marks as retained."""
    gateway = gateway_process({"mqtt": {"telemetry_protocol": protocol}})
    register(gateway.store, "w-stale", "w-marker")
    pub = Publisher(mosquitto, mosquitto.add_device("w-stale"), client_id="w-stale")
    old = int(time.time() * 1000) - 3_600_000
    pub.publish("eldercare/watch/w-stale/status", {"ts": old, "seq": 1, "battery": 50, "worn": True}, retain=True)
    pub.wait_all()
    gateway.start()
    marker = Publisher(mosquitto, mosquitto.add_device("w-marker"), client_id="w-marker")
    marker.publish("eldercare/watch/w-marker/status", {"ts": old + 5, "seq": 1, "battery": 80, "worn": True})
    marker.wait_all()
    marker.close()
    wait_until(lambda: gateway.store.already_seen([("w-marker", old + 5, 1)]) != set(), 30, "the marker")
    assert gateway.store.already_seen([("w-stale", old, 1)]) == set()
    # A live message with the retain flag is a message like any other.
    pub.publish("eldercare/watch/w-stale/status", {"ts": old + 10, "seq": 2, "battery": 49, "worn": True}, retain=True)
    pub.wait_all()
    pub.close()
    wait_until(lambda: gateway.store.already_seen([("w-stale", old + 10, 2)]) != set(), 30, "the live reading")
    assert gateway.store.seen_count() == 2
    gateway.stop()
    # The stale message was acknowledged: a restart does not receive it again as a queued message.
    gateway.start()
    time.sleep(1)
    assert gateway.store.seen_count() == 2
