"""Scenarios: small declarative TOML files saying which devices exist and what happens when.

    name = "demo"
    duration = "1h"            # "90s", "30m", "1h30m" or a number of seconds
    start_time = "07:30"       # local time of day at offset 0; routines follow it
    [community]                # optional: lat, lon, radius_m
    [fleet]
    watches = 3                # watch-0001 .. watch-0003
    equipment = ["rower", "walker"]   # rower-01, walker-01
    [cadence]                  # optional, seconds: location_moving, location_rest, status, health
    [[events]]
    at = "5m"
    device = "watch-0001"
    action = "sos"
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from gateway.models import DeviceId, DeviceKind, EquipmentType

from device_sim.geo import Community, GeoPoint
from device_sim.malformed import MALFORMED_KINDS

WATCH_ACTIONS = frozenset({"sos", "fall", "service_call", "wander", "battery_low", "remove_watch"})
EQUIPMENT_ACTIONS = frozenset({"overexert"})
ANY_DEVICE_ACTIONS = frozenset({"silent", "duplicate", "out_of_order", "malformed"})
# Which optional keys each action takes; any other key is a mistake worth reporting.
ACTION_KEYS = {
    "sos": set(), "service_call": set(), "fall": {"confidence"},
    "wander": {"duration"}, "battery_low": {"level"}, "remove_watch": {"duration"},
    "overexert": {"age", "duration"}, "silent": {"duration"},
    "duplicate": set(), "out_of_order": {"back"}, "malformed": {"kind"},
}
NEEDS_DURATION = frozenset({"wander", "remove_watch", "silent"})
_DEVICE_ID = TypeAdapter(DeviceId)
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with where and why."""


@dataclass(frozen=True, slots=True)
class Cadence:
    """Seconds between a watch's reports."""

    location_moving: float = 60
    location_rest: float = 300
    status: float = 300
    health: float = 600


@dataclass(frozen=True, slots=True)
class Event:
    """One scripted thing a device does at `at_s` seconds after the start."""

    at_s: float
    device: str
    action: str
    duration_s: float | None = None
    confidence: float | None = None
    level: int | None = None
    age: int | None = None
    back: int = 3
    kind: str | None = None

    @property
    def t_ms(self) -> int:
        return round(self.at_s * 1000)

    @property
    def end_ms(self) -> int:
        return self.t_ms + round((self.duration_s or 0) * 1000)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    duration_s: float
    start_time_s: float
    community: Community
    cadence: Cadence
    watches: tuple[str, ...]
    equipment: tuple[tuple[str, EquipmentType], ...]
    events: tuple[Event, ...] = ()
    description: str = ""

    @property
    def devices(self) -> tuple[tuple[str, DeviceKind], ...]:
        """Every device id with its kind, watches first."""
        return tuple((w, DeviceKind.WATCH) for w in self.watches) + tuple(
            (e, DeviceKind.EQUIPMENT) for e, _ in self.equipment)

    def events_for(self, device_id: str) -> list[Event]:
        return sorted((e for e in self.events if e.device == device_id), key=lambda e: e.at_s)


def parse_duration(value: object, what: str) -> float:
    """Seconds from a number or a string like "90s", "30m", "1h30m"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if not m or not value.strip() or not any(m.groups()):
        raise ScenarioError(f"{what}: {value!r} is not a duration like 90, \"90s\", \"30m\" or \"1h30m\"")
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + s


def _time_of_day(value: object) -> float:
    m = re.match(r"^(\d{1,2}):(\d{2})$", value) if isinstance(value, str) else None
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ScenarioError(f"start_time: {value!r} is not a local time like \"07:30\"")
    return int(m[1]) * 3600 + int(m[2]) * 60


def _table(doc: dict, key: str, allowed: set[str]) -> dict:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise ScenarioError(f"[{key}] must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise ScenarioError(f"[{key}]: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return table


def _fleet(doc: dict) -> tuple[tuple[str, ...], tuple[tuple[str, EquipmentType], ...]]:
    fleet = _table(doc, "fleet", {"watches", "equipment", "watch_id_prefix"})
    count = fleet.get("watches", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ScenarioError(f"[fleet] watches: {count!r} is not a number of watches")
    prefix = fleet.get("watch_id_prefix", "watch-")
    watches = tuple(f"{prefix}{i:04d}" for i in range(1, count + 1))
    seen: dict[EquipmentType, int] = {}
    equipment = []
    for name in fleet.get("equipment", []):
        try:
            kind = EquipmentType(name)
        except ValueError:
            raise ScenarioError(f"[fleet] equipment: unknown type {name!r}; known: "
                                f"{[t.value for t in EquipmentType]}") from None
        seen[kind] = seen.get(kind, 0) + 1
        equipment.append((f"{kind.value.replace('_', '-')}-{seen[kind]:02d}", kind))
    for device_id in watches + tuple(d for d, _ in equipment):
        try:
            _DEVICE_ID.validate_python(device_id)
        except ValidationError:
            raise ScenarioError(f"[fleet]: {device_id!r} is not a valid device id") from None
    return watches, tuple(equipment)


def _event(i: int, raw: object, kinds: dict[str, DeviceKind], duration_s: float) -> Event:
    where = f"events[{i}]"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} must be a table ([[events]])")
    missing = {"at", "device", "action"} - set(raw)
    if missing:
        raise ScenarioError(f"{where}: missing {sorted(missing)}")
    action, device = raw["action"], raw["device"]
    if action not in ACTION_KEYS:
        raise ScenarioError(f"{where}: unknown action {action!r}; known: {sorted(ACTION_KEYS)}")
    if device not in kinds:
        raise ScenarioError(f"{where}: no device {device!r} in the fleet; devices: {sorted(kinds)}")
    if (action in WATCH_ACTIONS and kinds[device] != DeviceKind.WATCH) or (
            action in EQUIPMENT_ACTIONS and kinds[device] != DeviceKind.EQUIPMENT):
        raise ScenarioError(f"{where}: {action!r} is not something {device!r} ({kinds[device].value}) can do")
    extra = set(raw) - {"at", "device", "action"} - ACTION_KEYS[action]
    if extra:
        raise ScenarioError(f"{where}: {action!r} takes no {sorted(extra)}; it takes {sorted(ACTION_KEYS[action])}")
    if action in NEEDS_DURATION and "duration" not in raw:
        raise ScenarioError(f"{where}: {action!r} needs a duration")
    at_s = parse_duration(raw["at"], f"{where} at")
    if at_s >= duration_s:
        raise ScenarioError(f"{where}: at {at_s:g} s is not before the scenario's end ({duration_s:g} s)")
    kind = raw.get("kind")
    if action == "malformed":
        allowed = MALFORMED_KINDS[kinds[device]]
        if kind not in allowed:
            raise ScenarioError(f"{where}: malformed kind {kind!r} for a {kinds[device].value}; known: {sorted(allowed)}")
    dur = parse_duration(raw["duration"], f"{where} duration") if "duration" in raw else None
    try:
        return Event(at_s, device, action, dur, raw.get("confidence"), raw.get("level"), raw.get("age"),
                     int(raw.get("back", 3)), kind)
    except (TypeError, ValueError) as e:
        raise ScenarioError(f"{where}: {e}") from None


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """A Scenario from TOML text; ScenarioError names the file and the problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: not valid TOML: {e}") from None
    try:
        top = {"name", "description", "duration", "start_time", "community", "fleet", "cadence", "events"}
        unknown = set(doc) - top
        if unknown:
            raise ScenarioError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(top)}")
        if "duration" not in doc:
            raise ScenarioError("missing duration")
        duration_s = parse_duration(doc["duration"], "duration")
        c, default = _table(doc, "community", {"lat", "lon", "radius_m"}), Community()
        community = Community(GeoPoint(float(c.get("lat", default.centre.lat)), float(c.get("lon", default.centre.lon))),
                              float(c.get("radius_m", default.radius_m)))
        if not (-90 <= community.centre.lat <= 90 and -180 <= community.centre.lon <= 180) or community.radius_m <= 0:
            raise ScenarioError("[community]: lat/lon out of range or radius_m not positive")
        cad = _table(doc, "cadence", set(Cadence.__slots__))
        cadence = Cadence(**{k: parse_duration(v, f"[cadence] {k}") for k, v in cad.items()})
        watches, equipment = _fleet(doc)
        scenario = Scenario(str(doc.get("name", Path(source).stem)), duration_s,
                            _time_of_day(doc.get("start_time", "08:00")), community, cadence, watches, equipment,
                            description=str(doc.get("description", "")))
        raw_events = doc.get("events", [])
        if not isinstance(raw_events, list):
            raise ScenarioError("events must be an array of tables ([[events]])")
        kinds = dict(scenario.devices)
        return replace(scenario, events=tuple(_event(i, raw, kinds, duration_s) for i, raw in enumerate(raw_events)))
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None


def _packaged():
    return resources.files("device_sim").joinpath("scenarios")


def scenario_names() -> list[str]:
    """The scenarios shipped with the package."""
    return sorted(p.name.removesuffix(".toml") for p in _packaged().iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return parse_scenario(path.read_text(encoding="utf-8"), str(path))
        except OSError as e:
            raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    packaged = _packaged().joinpath(f"{name_or_path}.toml")
    if not packaged.is_file():
        raise ScenarioError(f"no scenario {str(name_or_path)!r}; shipped: {scenario_names()} (or give a .toml path)")
    return parse_scenario(packaged.read_text(encoding="utf-8"), f"{name_or_path}.toml")
