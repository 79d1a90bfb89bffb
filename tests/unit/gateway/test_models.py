"""The message schema: what each stream accepts and what it refuses."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gateway.models import (
    EquipmentSession,
    EquipmentTelemetry,
    FallDetected,
    Health,
    Location,
    ServiceCall,
    SosPressed,
    WatchStatus,
)

TS = 1_767_225_600_000  # 2026-01-01T00:00Z


def parse(model, fields: dict):
    """Validate as the gateway does: from the JSON bytes a device sent."""
    return model.model_validate_json(json.dumps(fields))


def rejected_fields(model, fields: dict) -> set[str]:
    """The fields the model names as wrong; fails the test if it accepts the message."""
    with pytest.raises(ValidationError) as caught:
        parse(model, fields)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_sos_accepts_a_press_with_a_position():
    sos = parse(SosPressed, {"ts": TS, "seq": 1, "lat": 52.52, "lon": 13.40, "accuracy_m": 8.0})
    assert (sos.lat, sos.lon, sos.accuracy_m) == (52.52, 13.40, 8.0)


def test_sos_accepts_a_press_without_a_position():
    assert parse(SosPressed, {"ts": TS, "seq": 1}).lat is None


def test_fall_accepts_a_detection_with_confidence():
    assert parse(FallDetected, {"ts": TS, "seq": 2, "confidence": 0.93}).confidence == 0.93


def test_service_call_accepts_a_key_press():
    assert parse(ServiceCall, {"ts": TS, "seq": 3}).seq == 3


def test_location_accepts_a_wifi_fix():
    loc = parse(Location, {"ts": TS, "seq": 4, "lat": -33.86, "lon": 151.2, "accuracy_m": 35.0, "source": "wifi"})
    assert (loc.lat, loc.lon, loc.source) == (-33.86, 151.2, "wifi")


def test_location_source_defaults_to_gps():
    assert parse(Location, {"ts": TS, "seq": 4, "lat": 1.0, "lon": 2.0, "accuracy_m": 5.0}).source == "gps"


def test_status_accepts_battery_and_worn():
    status = parse(WatchStatus, {"ts": TS, "seq": 5, "battery": 80, "worn": True, "steps": 4200})
    assert (status.battery, status.worn, status.charging, status.steps) == (80, True, False, 4200)


def test_health_accepts_heart_rate_and_spo2():
    health = parse(Health, {"ts": TS, "seq": 6, "heart_rate": 72, "spo2": 97})
    assert (health.heart_rate, health.spo2) == (72, 97)


def test_health_accepts_spo2_alone():
    assert parse(Health, {"ts": TS, "seq": 6, "spo2": 95}).heart_rate is None


def test_equipment_session_accepts_an_end_with_totals():
    session = parse(EquipmentSession, {
        "ts": TS, "seq": 7, "event": "end", "session_id": "s1", "equipment_type": "rower",
        "elapsed_s": 600, "count": 250, "distance_m": 1500.0, "energy_kcal": 80.5,
    })
    assert (session.event, session.equipment_type, session.count) == ("end", "rower", 250)


def test_equipment_telemetry_accepts_a_reading():
    reading = parse(EquipmentTelemetry, {
        "ts": TS, "seq": 8, "session_id": "s1", "elapsed_s": 30, "count": 14, "energy_kcal": 3.5, "heart_rate": 98,
    })
    assert (reading.elapsed_s, reading.count, reading.energy_kcal) == (30, 14, 3.5)


def test_unknown_extra_fields_are_ignored():
    health = parse(Health, {"ts": TS, "seq": 6, "heart_rate": 72, "firmware": "2.1", "mood": "fine"})
    assert not hasattr(health, "firmware")
    assert "mood" not in health.model_dump()


def test_a_payload_device_id_echo_is_kept():
    assert parse(SosPressed, {"ts": TS, "seq": 1, "device_id": "w1"}).device_id == "w1"


@pytest.mark.parametrize("lat", [200.0, -91.0])
def test_location_rejects_latitude_outside_plus_minus_90(lat):
    assert rejected_fields(Location, {"ts": TS, "seq": 1, "lat": lat, "lon": 0.0, "accuracy_m": 5.0}) == {"lat"}


def test_location_rejects_longitude_181():
    assert rejected_fields(Location, {"ts": TS, "seq": 1, "lat": 0.0, "lon": 181.0, "accuracy_m": 5.0}) == {"lon"}


@pytest.mark.parametrize("heart_rate", [-5, 0, 400])
def test_health_rejects_an_impossible_heart_rate(heart_rate):
    assert rejected_fields(Health, {"ts": TS, "seq": 1, "heart_rate": heart_rate}) == {"heart_rate"}


def test_health_rejects_spo2_above_100():
    assert rejected_fields(Health, {"ts": TS, "seq": 1, "spo2": 120}) == {"spo2"}


def test_status_rejects_battery_101():
    assert rejected_fields(WatchStatus, {"ts": TS, "seq": 1, "battery": 101, "worn": True}) == {"battery"}


def test_a_message_without_ts_is_rejected():
    assert rejected_fields(SosPressed, {"seq": 1}) == {"ts"}


def test_a_message_without_seq_is_rejected():
    assert rejected_fields(SosPressed, {"ts": TS}) == {"seq"}


def test_ts_as_a_numeric_string_is_rejected_strictly():
    assert rejected_fields(SosPressed, {"ts": "1767225600000", "seq": 1}) == {"ts"}


def test_ts_as_a_short_numeric_string_is_rejected():
    assert rejected_fields(SosPressed, {"ts": "123", "seq": 1}) == {"ts"}


def test_a_negative_seq_is_rejected():
    assert rejected_fields(SosPressed, {"ts": TS, "seq": -1}) == {"seq"}


def test_ts_before_2015_is_rejected_as_a_watch_that_lost_its_clock():
    assert rejected_fields(SosPressed, {"ts": 1_000_000_000_000, "seq": 1}) == {"ts"}  # 2001-09-09


def test_lat_without_lon_is_rejected():
    with pytest.raises(ValidationError, match="lat and lon must be given together"):
        parse(SosPressed, {"ts": TS, "seq": 1, "lat": 52.5})


def test_health_with_neither_heart_rate_nor_spo2_is_rejected():
    with pytest.raises(ValidationError, match="needs heart_rate or spo2"):
        parse(Health, {"ts": TS, "seq": 1})


def test_an_unknown_equipment_type_is_rejected():
    session = {"ts": TS, "seq": 1, "event": "start", "session_id": "s1", "equipment_type": "trampoline"}
    assert rejected_fields(EquipmentSession, session) == {"equipment_type"}


def test_a_session_event_other_than_start_or_end_is_rejected():
    session = {"ts": TS, "seq": 1, "event": "pause", "session_id": "s1", "equipment_type": "rower"}
    assert rejected_fields(EquipmentSession, session) == {"event"}
