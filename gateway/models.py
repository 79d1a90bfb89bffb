"""Device message models: the one schema every part of the project imports.

Each MQTT stream has one frozen pydantic model. `ts` (device clock, epoch ms)
and `seq` (per-device sequence number) are on every message; together with
the device id from the topic they are the idempotency key.

Field names and units follow Bluetooth FTMS where it has one (elapsed time
in s, distance in m, energy in kcal, power in W, heart rate in bpm).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DeviceKind(StrEnum):
    WATCH = "watch"
    EQUIPMENT = "equipment"


class EquipmentType(StrEnum):
    ROWER = "rower"
    ELLIPTICAL = "elliptical"
    WALKER = "walker"
    AB_BOARD = "ab_board"
    WAIST_TWISTER = "waist_twister"


# Device clocks before 2015 or after 2100 mean a watch that lost its time;
# the timestamp would be useless in the time-series store.
EpochMs = Annotated[int, Field(ge=1_420_070_400_000, lt=4_102_444_800_000)]
Seq = Annotated[int, Field(ge=0, lt=2**63)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
HeartRate = Annotated[int, Field(ge=20, le=250)]
DeviceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class DevicePayload(BaseModel):
    """Fields every device message carries."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    kind: ClassVar[DeviceKind]
    stream: ClassVar[str]
    critical: ClassVar[bool] = False
    # String fields that become line-protocol tags (low cardinality only).
    tag_fields: ClassVar[tuple[str, ...]] = ()
    # Fields the time-series store never sees (an unbounded key would make a new series each time).
    not_in_series: ClassVar[tuple[str, ...]] = ()

    ts: EpochMs
    seq: Seq
    # Optional echo of the id; when present it must match the topic's.
    device_id: DeviceId | None = None


class _OptionalPosition(DevicePayload):
    """Where the wearer was when the event happened, if the watch had a fix."""

    lat: Latitude | None = None
    lon: Longitude | None = None
    accuracy_m: Annotated[float, Field(ge=0, le=100_000)] | None = None

    @model_validator(mode="after")
    def _lat_and_lon_together(self) -> Self:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together")
        return self


class SosPressed(_OptionalPosition):
    kind = DeviceKind.WATCH
    stream = "sos"
    critical = True


class FallDetected(_OptionalPosition):
    kind = DeviceKind.WATCH
    stream = "fall"
    critical = True

    confidence: Annotated[float, Field(ge=0, le=1)] | None = None


class ServiceCall(_OptionalPosition):
    """The service-call key: a request for home service, not an emergency."""

    kind = DeviceKind.WATCH
    stream = "service_call"
    critical = True


class Location(DevicePayload):
    kind = DeviceKind.WATCH
    stream = "location"
    tag_fields = ("source",)

    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Field(ge=0, le=100_000)]
    source: Literal["gps", "wifi", "lbs"] = "gps"


class WatchStatus(DevicePayload):
    kind = DeviceKind.WATCH
    stream = "status"

    battery: Annotated[int, Field(ge=0, le=100)]
    worn: bool
    charging: bool = False
    steps: Annotated[int, Field(ge=0, le=200_000)] = 0
    signal_dbm: Annotated[int, Field(ge=-140, le=0)] | None = None


class Health(DevicePayload):
    kind = DeviceKind.WATCH
    stream = "health"

    heart_rate: HeartRate | None = None
    spo2: Annotated[int, Field(ge=50, le=100)] | None = None

    @model_validator(mode="after")
    def _has_a_reading(self) -> Self:
        if self.heart_rate is None and self.spo2 is None:
            raise ValueError("a health message needs heart_rate or spo2")
        return self


class EquipmentSession(DevicePayload):
    """A session starting or ending on a piece of outdoor fitness equipment."""

    kind = DeviceKind.EQUIPMENT
    stream = "session"
    tag_fields = ("event", "equipment_type")
    # Sessions live in the operational store (gateway/exercise_store.py), found there by machine and time.
    not_in_series = ("session_id",)

    event: Literal["start", "end"]
    session_id: Annotated[str, Field(min_length=1, max_length=64)]
    equipment_type: EquipmentType
    # Totals, sent with "end".
    elapsed_s: Annotated[int, Field(ge=0, le=86_400)] | None = None
    count: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    distance_m: Annotated[float, Field(ge=0, le=200_000)] | None = None
    energy_kcal: Annotated[float, Field(ge=0, le=10_000)] | None = None


class EquipmentTelemetry(DevicePayload):
    """1 Hz readings during a session; `count` is strokes, steps, reps or turns."""

    kind = DeviceKind.EQUIPMENT
    stream = "telemetry"
    not_in_series = ("session_id",)

    session_id: Annotated[str, Field(min_length=1, max_length=64)]
    elapsed_s: Annotated[int, Field(ge=0, le=86_400)]
    count: Annotated[int, Field(ge=0, le=1_000_000)]
    distance_m: Annotated[float, Field(ge=0, le=200_000)] | None = None
    energy_kcal: Annotated[float, Field(ge=0, le=10_000)]
    heart_rate: HeartRate | None = None
    power_w: Annotated[int, Field(ge=0, le=2_000)] | None = None


PAYLOAD_TYPES: tuple[type[DevicePayload], ...] = (
    SosPressed,
    FallDetected,
    ServiceCall,
    Location,
    WatchStatus,
    Health,
    EquipmentSession,
    EquipmentTelemetry,
)

STREAMS: dict[tuple[DeviceKind, str], type[DevicePayload]] = {
    (cls.kind, cls.stream): cls for cls in PAYLOAD_TYPES
}

CRITICAL_STREAMS: frozenset[str] = frozenset(c.stream for c in PAYLOAD_TYPES if c.critical)


@dataclass(slots=True)
class DeviceMessage:
    """A validated message: who sent it, on which stream, and what it says.

    A value nothing changes (the payload is frozen); the class is not, as one is made per message
    and a frozen dataclass costs several times as much to make."""

    device_id: str
    kind: DeviceKind
    payload: DevicePayload
    # The idempotency key: a redelivery repeats `ts` and `seq` exactly, a rebooted watch restarts
    # `seq` at 1 with a newer `ts`, so its messages are new data and never "duplicates".
    key: tuple[str, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = (self.device_id, self.payload.ts, self.payload.seq)

    @property
    def stream(self) -> str:
        return self.payload.stream
