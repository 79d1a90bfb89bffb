"""Deliberately broken payloads, the only ones not produced by a valid model.

Each starts from a valid model's JSON and breaks one thing, so a rejection
can only be for that one reason.
"""
from __future__ import annotations

from typing import Any

import orjson

from gateway.models import DeviceKind, DevicePayload, EquipmentTelemetry, Health, Location, WatchStatus

_WATCH_KINDS = {"bad_json", "not_an_object", "missing_ts", "missing_seq", "lat_out_of_range",
                "heart_rate_out_of_range", "wrong_type", "unknown_stream"}
MALFORMED_KINDS: dict[DeviceKind, frozenset[str]] = {
    DeviceKind.WATCH: frozenset(_WATCH_KINDS),
    DeviceKind.EQUIPMENT: frozenset(_WATCH_KINDS - {"lat_out_of_range"}),
}


def _valid(device_kind: DeviceKind, kind: str, ts: int, seq: int) -> dict[str, Any]:
    model: DevicePayload
    if device_kind == DeviceKind.EQUIPMENT:
        model = EquipmentTelemetry(ts=ts, seq=seq, session_id="s-1", elapsed_s=10, count=3, energy_kcal=0.5,
                                   heart_rate=90)
    elif kind == "lat_out_of_range":
        model = Location(ts=ts, seq=seq, lat=31.2304, lon=121.4737, accuracy_m=10.0)
    elif kind in ("heart_rate_out_of_range", "missing_ts", "not_an_object"):
        model = Health(ts=ts, seq=seq, heart_rate=72, spo2=97)
    else:
        model = WatchStatus(ts=ts, seq=seq, battery=80, worn=True, steps=1200)
    return {"stream": model.stream, **model.model_dump(exclude_none=True)}


def malformed_payload(device_kind: DeviceKind, kind: str, ts: int, seq: int) -> tuple[str, bytes]:
    """(stream, payload bytes) broken in the way `kind` names."""
    if kind not in MALFORMED_KINDS[device_kind]:
        raise ValueError(f"no malformed kind {kind!r} for a {device_kind.value}")
    body = _valid(device_kind, kind, ts, seq)
    stream = body.pop("stream")
    if kind == "bad_json":
        return stream, orjson.dumps(body)[:-4]
    if kind == "not_an_object":
        return stream, orjson.dumps([body])
    if kind == "missing_ts":
        body.pop("ts")
    elif kind == "missing_seq":
        body.pop("seq")
    elif kind == "lat_out_of_range":
        body["lat"] = 200.0
    elif kind == "heart_rate_out_of_range":
        body["heart_rate"] = 400
    elif kind == "wrong_type":
        body["battery" if "battery" in body else "count"] = "full"
    elif kind == "unknown_stream":
        stream = "toaster"
    return stream, orjson.dumps(body)
