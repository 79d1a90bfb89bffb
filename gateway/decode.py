"""Bytes from MQTT become a DeviceMessage or a Rejection: the one place input is judged."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from gateway.models import STREAMS, DeviceMessage
from gateway.topics import TopicError, Topics

DEFAULT_MAX_PAYLOAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message could not be accepted. `reason` is a stable code for counters."""

    reason: str
    detail: str


def _describe(err: ValidationError) -> Rejection:
    first = err.errors(include_url=False)[0]
    kind, loc = first["type"], ".".join(str(p) for p in first["loc"])
    if kind == "json_invalid":
        return Rejection("bad_json", f"not valid JSON: {first['msg']}")
    if kind == "model_type" or (kind.endswith("_type") and not loc):
        return Rejection("not_an_object", "payload must be a JSON object")
    if kind == "missing":
        return Rejection("missing_field", f"missing field {loc!r}")
    where = f"field {loc!r}: " if loc else ""
    extra = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return Rejection("invalid_field", f"{where}{first['msg']}{extra}")


def decode(topics: Topics, topic: str, payload: bytes | bytearray,
           max_payload: int = DEFAULT_MAX_PAYLOAD) -> DeviceMessage | Rejection:
    """Judge one message; never raises for bad input."""
    try:
        where = topics.parse(topic)
    except TopicError as e:
        return Rejection("bad_topic", str(e))
    if len(payload) > max_payload:
        return Rejection("too_large", f"payload of {len(payload)} bytes exceeds the {max_payload}-byte limit")
    model = STREAMS.get((where.kind, where.stream))
    if model is None:
        return Rejection("unknown_stream", f"no stream {where.stream!r} for {where.kind.value} devices")
    try:
        body = model.model_validate_json(payload)
    except ValidationError as e:
        return _describe(e)
    if body.device_id is not None and body.device_id != where.device_id:
        return Rejection(
            "device_mismatch",
            f"payload says device {body.device_id!r} but was published under {where.device_id!r}",
        )
    return DeviceMessage(where.device_id, where.kind, body)
