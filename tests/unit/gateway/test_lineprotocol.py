"""to_line(): one DeviceMessage becomes one InfluxDB line-protocol line."""
from __future__ import annotations

import json

from gateway.lineprotocol import escape_tag, to_line
from gateway.models import DeviceKind, DeviceMessage, EquipmentSession, EquipmentTelemetry, Location, WatchStatus


def message(device_id: str, kind: DeviceKind, model, fields: dict) -> DeviceMessage:
    return DeviceMessage(device_id, kind, model.model_validate_json(json.dumps(fields)))


def test_a_location_becomes_one_line_with_tags_int_and_float_fields_and_a_ms_timestamp():
    fix = message("w1", DeviceKind.WATCH, Location,
                  {"ts": 1767225600000, "seq": 4, "lat": 52.52, "lon": 13.4, "accuracy_m": 8.0, "source": "wifi"})
    assert to_line(fix) == (
        "location,device_id=w1,kind=watch,source=wifi seq=4i,lat=52.52,lon=13.4,accuracy_m=8.0 1767225600000"
    )


def test_booleans_are_written_as_true_and_false():
    status = message("w1", DeviceKind.WATCH, WatchStatus,
                     {"ts": 1767225600000, "seq": 5, "battery": 80, "worn": True, "charging": False, "steps": 12})
    assert to_line(status) == (
        "status,device_id=w1,kind=watch seq=5i,battery=80i,worn=true,charging=false,steps=12i 1767225600000"
    )


def test_fields_that_are_none_are_left_out():
    status = message("w1", DeviceKind.WATCH, WatchStatus, {"ts": 1767225600000, "seq": 5, "battery": 80, "worn": True})
    assert "signal_dbm" not in to_line(status)


def test_the_payloads_device_id_echo_is_not_a_field():
    fix = message("w1", DeviceKind.WATCH, Location,
                  {"ts": 1767225600000, "seq": 4, "lat": 1.0, "lon": 2.0, "accuracy_m": 3.0, "device_id": "w1"})
    assert to_line(fix).count("device_id=") == 1


def test_spaces_commas_and_equals_signs_in_a_tag_value_are_escaped():
    start = message("e 1,a=b", DeviceKind.EQUIPMENT, EquipmentSession,
                    {"ts": 1767225600000, "seq": 1, "event": "start", "session_id": "s1", "equipment_type": "rower"})
    assert to_line(start) == (
        r"session,device_id=e\ 1\,a\=b,kind=equipment,event=start,equipment_type=rower seq=1i 1767225600000"
    )


def test_a_session_key_never_reaches_the_time_series_store():
    """Every workout has a new session id: as a tag it would make new series without end."""
    start = message("e1", DeviceKind.EQUIPMENT, EquipmentSession,
                    {"ts": 1767225600000, "seq": 1, "event": "start", "session_id": "s-0042", "equipment_type": "rower"})
    reading = message("e1", DeviceKind.EQUIPMENT, EquipmentTelemetry,
                      {"ts": 1767225601000, "seq": 2, "session_id": "s-0042", "elapsed_s": 1, "count": 0,
                       "energy_kcal": 0.1, "heart_rate": 90})
    assert "s-0042" not in to_line(start) and "s-0042" not in to_line(reading)
    assert to_line(reading).startswith("telemetry,device_id=e1,kind=equipment seq=2i,elapsed_s=1i,")


def test_a_backslash_in_a_tag_value_is_doubled():
    assert escape_tag("a\\b") == "a\\\\b"


def test_a_newline_in_a_tag_value_cannot_end_the_line():
    assert "\n" not in escape_tag("s1\nevil,x=1 y=2")


def test_the_same_message_formats_to_the_same_line_twice():
    # Redelivery is idempotent in the sink only if series and timestamp repeat exactly.
    fix = message("w1", DeviceKind.WATCH, Location,
                  {"ts": 1767225600000, "seq": 4, "lat": 52.52, "lon": 13.4, "accuracy_m": 8.0})
    again = message("w1", DeviceKind.WATCH, Location,
                    {"ts": 1767225600000, "seq": 4, "lat": 52.52, "lon": 13.4, "accuracy_m": 8.0})
    assert to_line(fix) == to_line(fix) == to_line(again)
