"""DeviceMessage -> InfluxDB line protocol, formatted by hand.

One measurement per stream, tags `device_id` and `kind` (plus a stream's own
low-cardinality string fields), every other value a field, the device's `ts`
as the timestamp in ms. Re-writing the same message yields the same series
and timestamp, which the store treats as the same point: redelivery is
idempotent in the sink. String fields are avoided on purpose: Influx-
compatible stores that keep only numbers (VictoriaMetrics) would drop them.
"""
from __future__ import annotations

from gateway.models import DeviceMessage

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\", "\n": r"\n"})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\\": "\\\\", "\n": r"\n"})
_SKIP = frozenset({"ts", "device_id"})


def escape_tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def escape_measurement(value: str) -> str:
    return value.translate(_MEASUREMENT_ESCAPES)


def _field(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    # Enums and other strings: quoted string field.
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def to_line(message: DeviceMessage) -> str:
    body = message.payload
    tag_names = body.tag_fields
    tags = [f"device_id={escape_tag(message.device_id)}", f"kind={message.kind.value}"]
    fields = []
    for name, value in body.__dict__.items():
        if value is None or name in _SKIP:
            continue
        if name in tag_names:
            tags.append(f"{name}={escape_tag(str(value))}")
        else:
            fields.append(f"{name}={_field(value)}")
    return f"{escape_measurement(body.stream)},{','.join(tags)} {','.join(fields)} {body.ts}"
