"""decode(): bytes from MQTT become a DeviceMessage or a Rejection with a stable reason code."""
from __future__ import annotations

import pytest

from gateway.decode import Rejection, decode
from gateway.models import DeviceKind, DeviceMessage, Health
from gateway.topics import Topics

TOPICS = Topics()
HEALTH = "eldercare/watch/w1/health"


def test_a_valid_message_becomes_a_device_message_with_the_topics_device_id():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": 7, "heart_rate": 72}')
    assert result == DeviceMessage("w1", DeviceKind.WATCH, Health(ts=1767225600000, seq=7, heart_rate=72))


def test_a_payload_echoing_the_same_device_id_is_accepted():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": 7, "spo2": 97, "device_id": "w1"}')
    assert isinstance(result, DeviceMessage)
    assert result.key == ("w1", 1767225600000, 7)


def test_a_topic_outside_the_scheme_is_rejected_as_bad_topic():
    result = decode(TOPICS, "eldercare/watch/w1", b'{"ts": 1767225600000, "seq": 7, "heart_rate": 72}')
    assert result.reason == "bad_topic"
    assert "'eldercare/watch/w1'" in result.detail


def test_a_one_megabyte_payload_is_rejected_as_too_large():
    result = decode(TOPICS, HEALTH, b" " * 1_048_576)
    assert result.reason == "too_large"
    assert result.detail == "payload of 1048576 bytes exceeds the 16384-byte limit"


def test_the_size_limit_is_the_callers():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": 7, "heart_rate": 72}', max_payload=10)
    assert result.reason == "too_large"
    assert "10-byte limit" in result.detail


def test_a_stream_the_device_kind_does_not_have_is_rejected_as_unknown_stream():
    result = decode(TOPICS, "eldercare/equipment/e1/sos", b'{"ts": 1767225600000, "seq": 7}')
    assert result.reason == "unknown_stream"
    assert "'sos'" in result.detail and "equipment" in result.detail


def test_a_payload_that_is_not_json_is_rejected_as_bad_json():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": ')
    assert result.reason == "bad_json"
    assert result.detail.startswith("not valid JSON")


def test_a_json_array_is_rejected_as_not_an_object():
    result = decode(TOPICS, HEALTH, b"[1767225600000, 7, 72]")
    assert result == Rejection("not_an_object", "payload must be a JSON object")


def test_a_json_string_is_rejected_as_not_an_object():
    result = decode(TOPICS, HEALTH, b'"heart_rate=72"')
    assert result == Rejection("not_an_object", "payload must be a JSON object")


def test_a_missing_required_field_is_named():
    result = decode(TOPICS, HEALTH, b'{"seq": 7, "heart_rate": 72}')
    assert result == Rejection("missing_field", "missing field 'ts'")


def test_an_out_of_range_field_is_named_with_its_limit():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": 7, "heart_rate": 400}')
    assert result.reason == "invalid_field"
    assert result.detail == "field 'heart_rate': Input should be less than or equal to 250"


def test_a_message_level_rule_is_reported_as_invalid_field():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": 7}')
    assert result.reason == "invalid_field"
    assert "needs heart_rate or spo2" in result.detail


def test_further_errors_are_counted_in_the_detail():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": -1, "heart_rate": 400}')
    assert result.reason == "invalid_field"
    assert result.detail.endswith("(+1 more)")


def test_a_payload_claiming_another_device_is_rejected_as_device_mismatch():
    result = decode(TOPICS, HEALTH, b'{"ts": 1767225600000, "seq": 7, "heart_rate": 72, "device_id": "w2"}')
    assert result.reason == "device_mismatch"
    assert result.detail == "payload says device 'w2' but was published under 'w1'"


NASTY_PAYLOADS = [
    b"",
    b"\xff\xfe",
    b"\x00",
    b"null",
    b"1e999",
    b'{"ts": NaN}',
    b'{"ts": 1767225600000, "seq": 7, "heart_rate": 72, "spo2": NaN}',
    b'{"ts": 1767225600000, "seq": 7, "heart_rate": 72, "x": "\xed\xa0\x80"}',  # a lone surrogate
    b'{"ts": 1e999, "seq": 1e999, "heart_rate": 99999999999999999999999999}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 5_000,
]


@pytest.mark.parametrize("payload", NASTY_PAYLOADS, ids=range(len(NASTY_PAYLOADS)))
def test_hostile_bytes_are_rejected_never_raised(payload):
    result = decode(TOPICS, HEALTH, payload)
    assert isinstance(result, Rejection)
    assert result.reason in {"too_large", "bad_json", "not_an_object", "missing_field", "invalid_field"}
