"""The topic scheme: {prefix}/{kind}/{device_id}/{stream}, parsed and built in one place."""
from __future__ import annotations

import pytest

from gateway.models import CRITICAL_STREAMS, DeviceKind
from gateway.topics import DeviceTopic, TopicError, Topics

TOPICS = Topics()


def test_a_watch_topic_is_built_under_the_default_prefix():
    assert TOPICS.device(DeviceKind.WATCH, "w1", "sos") == "eldercare/watch/w1/sos"


def test_a_watch_topic_parses_back_to_what_built_it():
    topic = TOPICS.device(DeviceKind.WATCH, "w-17", "location")
    assert TOPICS.parse(topic) == DeviceTopic(DeviceKind.WATCH, "w-17", "location")


def test_an_equipment_topic_parses_back_to_what_built_it():
    topic = TOPICS.device("equipment", "rower.park:3", "telemetry")
    assert topic == "eldercare/equipment/rower.park:3/telemetry"
    assert TOPICS.parse(topic) == DeviceTopic(DeviceKind.EQUIPMENT, "rower.park:3", "telemetry")


def test_a_multi_level_prefix_builds_and_parses():
    acme = Topics("acme/eldercare")
    assert acme.device(DeviceKind.WATCH, "w1", "health") == "acme/eldercare/watch/w1/health"
    assert acme.parse("acme/eldercare/watch/w1/health") == DeviceTopic(DeviceKind.WATCH, "w1", "health")


def test_a_multi_level_prefix_refuses_the_default_prefix():
    with pytest.raises(TopicError):
        Topics("acme/eldercare").parse("eldercare/watch/w1/health")


def test_a_command_topic_ends_in_cmd():
    assert TOPICS.command(DeviceKind.WATCH, "w1") == "eldercare/watch/w1/cmd"


def test_a_topic_under_another_prefix_is_refused():
    with pytest.raises(TopicError, match="not eldercare/<kind>/<device_id>/<stream>"):
        TOPICS.parse("homecare/watch/w1/sos")


def test_an_unknown_device_kind_is_refused():
    with pytest.raises(TopicError, match="unknown device kind 'fridge'"):
        TOPICS.parse("eldercare/fridge/f1/status")


@pytest.mark.parametrize("topic", ["eldercare/watch/w1", "eldercare/watch", "eldercare"])
def test_a_topic_with_too_few_levels_is_refused(topic):
    with pytest.raises(TopicError):
        TOPICS.parse(topic)


def test_a_topic_with_too_many_levels_is_refused():
    with pytest.raises(TopicError):
        TOPICS.parse("eldercare/watch/w1/sos/extra")


@pytest.mark.parametrize("device_id", ["w 1", "w+1", "w#1", ""])
def test_a_device_id_with_characters_outside_the_scheme_is_refused(device_id):
    with pytest.raises(TopicError, match="invalid device id"):
        TOPICS.parse(f"eldercare/watch/{device_id}/sos")


def test_a_device_id_longer_than_64_characters_is_refused():
    with pytest.raises(TopicError, match="invalid device id"):
        TOPICS.parse(f"eldercare/watch/{'w' * 65}/sos")


@pytest.mark.parametrize("stream", ["sos", "fall", "service_call"])
def test_a_watch_alarm_topic_is_critical(stream):
    assert TOPICS.is_critical(f"eldercare/watch/w1/{stream}", CRITICAL_STREAMS)


def test_a_watch_location_topic_is_not_critical():
    assert not TOPICS.is_critical("eldercare/watch/w1/location", CRITICAL_STREAMS)


def test_a_critical_stream_one_level_too_deep_is_not_critical():
    assert not TOPICS.is_critical("eldercare/watch/w1/x/sos", CRITICAL_STREAMS)


def test_a_critical_stream_name_on_equipment_is_not_critical():
    assert not TOPICS.is_critical("eldercare/equipment/e1/sos", CRITICAL_STREAMS)


def test_a_critical_stream_under_another_prefix_is_not_critical():
    assert not TOPICS.is_critical("homecare/watch/w1/sos", CRITICAL_STREAMS)


def test_is_critical_honours_a_multi_level_prefix():
    acme = Topics("acme/eldercare")
    assert acme.is_critical("acme/eldercare/watch/w1/sos", CRITICAL_STREAMS)
    assert not acme.is_critical("eldercare/watch/w1/sos", CRITICAL_STREAMS)


def test_a_device_command_topic_is_a_command():
    assert TOPICS.is_command("eldercare/watch/w1/cmd")


def test_a_data_topic_is_not_a_command():
    assert not TOPICS.is_command("eldercare/watch/w1/sos")


def test_a_cmd_stream_one_level_too_deep_is_not_a_command():
    assert not TOPICS.is_command("eldercare/watch/w1/x/cmd")


def test_a_cmd_topic_under_another_prefix_is_not_ours():
    assert not TOPICS.is_command("homecare/watch/w1/cmd")


@pytest.mark.parametrize("prefix", ["", "eldercare/", "elder+care", "eldercare/#"])
def test_an_invalid_prefix_is_refused(prefix):
    with pytest.raises(ValueError, match="invalid topic prefix"):
        Topics(prefix)
