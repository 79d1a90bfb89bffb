"""Community directory: residents, contacts, geofences, duty phones and escalation plans, from TOML."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alerts.vocabulary import Channel, Severity

Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164 number")]
Lat = Annotated[float, Field(ge=-90, le=90)]
Lon = Annotated[float, Field(ge=-180, le=180)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CircleFence(_Model):
    shape: Literal["circle"] = "circle"
    lat: Lat
    lon: Lon
    radius_m: float = Field(gt=0, le=100_000)


class PolygonFence(_Model):
    shape: Literal["polygon"] = "polygon"
    points: tuple[tuple[Lat, Lon], ...] = Field(min_length=3, description="(lat, lon) corners in order")


class Contact(_Model):
    name: str = Field(min_length=1)
    phone: Phone
    relation: str = Field(min_length=1, description="e.g. daughter, son, neighbour")


# Who a step reaches: the duty phones, every family contact, or only the first.
Target = Literal["service_centre", "backup_centre", "service_desk", "maintenance", "family_all", "family_first"]


class EscalationStep(_Model):
    channel: Channel
    target: Target
    wait_s: float | None = Field(
        default=None, gt=0,
        description="How long to wait for acceptance before the next step; default: the severity's ack deadline",
    )


Plan = tuple[EscalationStep, ...]


class Resident(_Model):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    age: int = Field(ge=40, le=130)
    language: str = "zh-CN"
    address: str = Field(default="", max_length=300, description="Where the resident lives, for whoever goes to help")
    medical_notes: str = Field(default="", max_length=2000, description="What a responder should know: conditions, medication")
    watch_device_id: str | None = None
    heart_rate_range: tuple[Annotated[int, Field(ge=20, le=250)], Annotated[int, Field(ge=20, le=250)]] | None = None
    exercise_max_hr: int | None = Field(
        default=None, ge=60, le=220,
        description="Heart rate not to pass on fitness equipment, if their doctor set one; else a share of 220 - age",
    )
    phone: Phone | None = Field(
        default=None, description="The resident's own mobile: claims exercise sessions and receives their record link",
    )
    spo2_threshold: int | None = Field(
        default=None, ge=70, le=100, description="SpO2 (%) below which this resident's alert is raised",
    )
    geofence: CircleFence | PolygonFence | None = Field(default=None, discriminator="shape")
    contacts: tuple[Contact, ...] = ()
    escalation_plan: Plan | None = Field(default=None, min_length=1, description="Overrides the community default plan")

    @model_validator(mode="after")
    def _range_ordered(self) -> Self:
        if self.heart_rate_range and self.heart_rate_range[0] >= self.heart_rate_range[1]:
            raise ValueError("heart_rate_range must be [low, high] with low < high")
        return self


class DutyPhones(_Model):
    service_centre: Phone = Field(description="The service centre's duty line, first call for emergencies")
    backup_centre: Phone = Field(description="The backup centre, when the duty line does not answer")
    service_desk: Phone = Field(description="Receives service-call key presses and other yellow alerts")
    maintenance: Phone = Field(description="Receives equipment faults")


class Equipment(_Model):
    device_id: str = Field(min_length=1, max_length=64)
    name: str = ""
    # A machine assigned to one resident (e.g. in their home) lets overexertion use their age.
    resident_id: str | None = None


class Community(_Model):
    name: str = Field(min_length=1)
    default_age: int = Field(
        default=75, ge=40, le=130, description="Age assumed for equipment users, whose sessions carry no resident",
    )
    duty: DutyPhones
    default_plan: Plan = Field(min_length=1, description="Escalation for red/orange alerts of residents without their own plan")
    yellow_plan: Plan = Field(
        default=(EscalationStep(channel=Channel.SMS, target="service_desk"),), min_length=1,
        description="Escalation for yellow alerts",
    )
    maintenance_plan: Plan = Field(
        default=(EscalationStep(channel=Channel.SMS, target="maintenance"),), min_length=1,
        description="Escalation for equipment alerts",
    )
    residents: tuple[Resident, ...] = ()
    equipment: tuple[Equipment, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [r.id for r in self.residents]
        watches = [r.watch_device_id for r in self.residents if r.watch_device_id]
        phones = [r.phone for r in self.residents if r.phone]
        for what, seq in (("resident id", ids), ("watch_device_id", watches), ("resident phone", phones)):
            dup = {x for x in seq if seq.count(x) > 1}
            if dup:
                raise ValueError(f"duplicate {what}: {sorted(dup)}")
        known = set(ids)
        for e in self.equipment:
            if e.resident_id is not None and e.resident_id not in known:
                raise ValueError(f"equipment {e.device_id}: unknown resident_id {e.resident_id!r}")
        return self


class DirectoryError(ValueError):
    """The community file is missing or invalid; the message names the bad field."""


class Directory:
    """Lookups over a validated community."""

    __slots__ = ("_by_id", "_by_phone", "_by_watch", "_equipment", "community")

    def __init__(self, community: Community) -> None:
        self.community = community
        self._by_id = {r.id: r for r in community.residents}
        self._by_watch = {r.watch_device_id: r for r in community.residents if r.watch_device_id}
        self._by_phone = {r.phone: r for r in community.residents if r.phone}
        self._equipment = {e.device_id: e for e in community.equipment}

    def resident(self, resident_id: str | None) -> Resident | None:
        return self._by_id.get(resident_id) if resident_id else None

    def resident_by_phone(self, phone: str) -> Resident | None:
        """The resident whose own mobile this is (E.164)."""
        return self._by_phone.get(phone)

    def wearer(self, device_id: str) -> Resident | None:
        return self._by_watch.get(device_id)

    def equipment_user(self, device_id: str) -> Resident | None:
        """The resident a machine is assigned to (e.g. in their home); None for shared equipment."""
        e = self._equipment.get(device_id)
        return self.resident(e.resident_id) if e else None

    def equipment_user_age(self, device_id: str) -> int:
        """The assigned resident's age, else the community default (sessions name no user)."""
        r = self.equipment_user(device_id)
        return r.age if r else self.community.default_age

    def plan_for(self, resident: Resident | None, severity: str, maintenance: bool) -> Plan:
        if maintenance:
            return self.community.maintenance_plan
        if severity == Severity.YELLOW:
            return self.community.yellow_plan
        if resident is not None and resident.escalation_plan:
            return resident.escalation_plan
        return self.community.default_plan

    def recipients(self, step: EscalationStep, resident: Resident | None) -> tuple[tuple[str, str], ...]:
        """(phone, language) pairs a step reaches; family targets are empty without a resident."""
        lang = resident.language if resident else "zh-CN"
        if step.target in ("family_all", "family_first"):
            contacts = resident.contacts if resident else ()
            if step.target == "family_first":
                contacts = contacts[:1]
            return tuple((c.phone, lang) for c in contacts)
        return ((getattr(self.community.duty, step.target), lang),)


def parse_community(data: dict[str, Any]) -> Directory:
    try:
        return Directory(Community.model_validate(data))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        raise DirectoryError(f"community file: {problems}") from None


def load_directory(path: Path) -> Directory:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DirectoryError(f"community file {path}: {e}") from None
    return parse_community(data)
