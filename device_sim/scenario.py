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

The simulator plays `[[events]]` only. Two more tables are for the demo
runner (devtools/demo.py), which plays a scenario through the whole stack:
`[[operations]]` are what people do to the gateway at a scenario time
(acknowledge a device's alert, restart the gateway), and `[gateway]` holds
gateway settings the scenario needs, in the gateway's own sections
(`[gateway.alerts] watch_silent_s = 20`); the gateway checks them at start.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from device_sim.geo import Community, GeoPoint
from device_sim.malformed import MALFORMED_KINDS
from gateway.models import DeviceId, DeviceKind, EquipmentType

WATCH_ACTIONS = frozenset({"sos", "fall", "service_call", "wander", "battery_low", "remove_watch", "lbs_drift"})
EQUIPMENT_ACTIONS = frozenset({"overexert", "abandon"})
ANY_DEVICE_ACTIONS = frozenset({"silent", "duplicate", "out_of_order", "malformed", "reboot", "clock_jump"})
# Which keys each action takes; any other key is a mistake worth reporting.
ACTION_KEYS = {
    "sos": set(), "service_call": set(), "fall": {"confidence"},
    "wander": {"duration"}, "battery_low": {"level"}, "remove_watch": {"duration"}, "lbs_drift": {"duration"},
    "overexert": {"age", "duration"}, "abandon": set(), "silent": {"duration"},
    "duplicate": set(), "out_of_order": {"back"}, "malformed": {"kind"},
    "reboot": set(), "clock_jump": {"ahead", "duration"},
}
# The keys an action cannot do without.
ACTION_NEEDS = {
    "wander": {"duration"}, "remove_watch": {"duration"}, "silent": {"duration"}, "lbs_drift": {"duration"},
    "clock_jump": {"ahead", "duration"},
}
# What people do to the gateway during a demo run, with the keys each takes and needs.
OPERATION_KEYS = {"acknowledge": {"device"}, "restart_gateway": {"down"}, "claim": {"device", "resident"}}
OPERATION_NEEDS = {"acknowledge": {"device"}, "claim": {"device", "resident"}}
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
    ahead_s: float | None = None

    @property
    def t_ms(self) -> int:
        return round(self.at_s * 1000)

    @property
    def end_ms(self) -> int:
        return self.t_ms + round((self.duration_s or 0) * 1000)

    @property
    def ahead_ms(self) -> int:
        return round((self.ahead_s or 0) * 1000)


@dataclass(frozen=True, slots=True)
class Operation:
    """Something people do to the gateway at `at_s`: acknowledge `device`'s open alert, or restart the
    gateway, which then stays down for `down_s` while the devices carry on, or a `resident` claiming the
    session `device` last told its display about (phone number, texted code). The demo runner does these."""

    at_s: float
    action: str
    device: str | None = None
    down_s: float = 0.0
    resident: str | None = None


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
    operations: tuple[Operation, ...] = ()
    gateway: Mapping[str, object] = field(default_factory=dict)  # settings for the demo's gateway, by section

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
    if m is None or not any(m.groups()):   # a blank string matches, with no group
        raise ScenarioError(f"{what}: {value!r} is not a duration like 90, \"90s\", \"30m\" or \"1h30m\"")
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + s


def _time_of_day(value: object) -> float:
    m = re.match(r"^(\d{1,2}):(\d{2})$", value) if isinstance(value, str) else None
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ScenarioError(f"start_time: {value!r} is not a local time like \"07:30\"")
    return int(m[1]) * 3600 + int(m[2]) * 60


def _table(doc: Mapping[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise ScenarioError(f"[{key}] must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise ScenarioError(f"[{key}]: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return table


def _fleet(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[tuple[str, EquipmentType], ...]]:
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


def _entry(where: str, raw: object, table: str) -> dict[str, Any]:
    """An `[[events]]` or `[[operations]]` entry, once it is a table."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} must be a table ([[{table}]])")
    return raw


def _action(where: str, raw: Mapping[str, Any], base: set[str], takes: dict[str, set[str]],
            needs: dict[str, set[str]]) -> str:
    """The entry's action, once the entry has its base keys and only the keys its action takes."""
    missing = base - set(raw)
    if missing:
        raise ScenarioError(f"{where}: missing {sorted(missing)}")
    action = raw["action"]
    if not isinstance(action, str) or action not in takes:
        raise ScenarioError(f"{where}: unknown action {action!r}; known: {sorted(takes)}")
    extra = set(raw) - base - takes[action]
    if extra:
        raise ScenarioError(f"{where}: {action!r} takes no {sorted(extra)}; it takes {sorted(takes[action])}")
    missing = needs.get(action, set()) - set(raw)
    if missing:
        raise ScenarioError(f"{where}: {action!r} needs {sorted(missing)}")
    return action


def _in_fleet(where: str, device: object, kinds: Mapping[str, DeviceKind]) -> str:
    if not isinstance(device, str) or device not in kinds:
        raise ScenarioError(f"{where}: no device {device!r} in the fleet; devices: {sorted(kinds)}")
    return device


def _at(where: str, raw: Mapping[str, Any], duration_s: float) -> float:
    at_s = parse_duration(raw["at"], f"{where} at")
    if at_s >= duration_s:
        raise ScenarioError(f"{where}: at {at_s:g} s is not before the scenario's end ({duration_s:g} s)")
    return at_s


def _event(i: int, raw: object, kinds: dict[str, DeviceKind], duration_s: float) -> Event:
    where = f"events[{i}]"
    raw = _entry(where, raw, "events")
    action = _action(where, raw, {"at", "device", "action"}, ACTION_KEYS, ACTION_NEEDS)
    device = _in_fleet(where, raw["device"], kinds)
    if (action in WATCH_ACTIONS and kinds[device] != DeviceKind.WATCH) or (
            action in EQUIPMENT_ACTIONS and kinds[device] != DeviceKind.EQUIPMENT):
        raise ScenarioError(f"{where}: {action!r} is not something {device!r} ({kinds[device].value}) can do")
    at_s = _at(where, raw, duration_s)
    kind = raw.get("kind")
    if action == "malformed":
        allowed = MALFORMED_KINDS[kinds[device]]
        if kind not in allowed:
            raise ScenarioError(f"{where}: malformed kind {kind!r} for a {kinds[device].value}; known: {sorted(allowed)}")
    dur = parse_duration(raw["duration"], f"{where} duration") if "duration" in raw else None
    ahead = parse_duration(raw["ahead"], f"{where} ahead") if "ahead" in raw else None
    try:
        return Event(at_s, device, action, dur, raw.get("confidence"), raw.get("level"), raw.get("age"),
                     int(raw.get("back", 3)), kind, ahead)
    except (TypeError, ValueError) as e:
        raise ScenarioError(f"{where}: {e}") from None


def _operation(i: int, raw: object, kinds: dict[str, DeviceKind], duration_s: float) -> Operation:
    where = f"operations[{i}]"
    raw = _entry(where, raw, "operations")
    action = _action(where, raw, {"at", "action"}, OPERATION_KEYS, OPERATION_NEEDS)
    device = _in_fleet(where, raw["device"], kinds) if "device" in raw else None
    at_s = _at(where, raw, duration_s)
    down_s = parse_duration(raw.get("down", 0), f"{where} down")
    if at_s + down_s >= duration_s:
        raise ScenarioError(f"{where}: the gateway must be back before the scenario's end ({duration_s:g} s)")
    resident = raw.get("resident")
    if action == "claim" and kinds[device or ""] != DeviceKind.EQUIPMENT:
        raise ScenarioError(f"{where}: only a fitness machine's session can be claimed, not {device!r}'s")
    if resident is not None and not isinstance(resident, str):
        raise ScenarioError(f"{where}: resident must be a resident id (text), not {resident!r}")
    return Operation(at_s, action, device, down_s, resident)


def _operations(raw_ops: object, kinds: dict[str, DeviceKind], duration_s: float) -> tuple[Operation, ...]:
    """The operations in time order; none may fall while a restarted gateway is still down."""
    if not isinstance(raw_ops, list):
        raise ScenarioError("operations must be an array of tables ([[operations]])")
    ops = sorted((_operation(i, raw, kinds, duration_s) for i, raw in enumerate(raw_ops)), key=lambda o: o.at_s)
    for before, after in pairwise(ops):
        if after.at_s < before.at_s + before.down_s:
            raise ScenarioError(f"operations: {after.action!r} at {after.at_s:g} s falls while the gateway is down "
                                f"({before.at_s:g} s + {before.down_s:g} s)")
    return tuple(ops)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """A Scenario from TOML text; ScenarioError names the file and the problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: not valid TOML: {e}") from None
    try:
        top = {"name", "description", "duration", "start_time", "community", "fleet", "cadence", "events",
               "operations", "gateway"}
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
        gateway = doc.get("gateway", {})
        if not isinstance(gateway, dict):
            raise ScenarioError("[gateway] must be a table of gateway settings sections")
        return replace(scenario, events=tuple(_event(i, raw, kinds, duration_s) for i, raw in enumerate(raw_events)),
                       operations=_operations(doc.get("operations", []), kinds, duration_s), gateway=gateway)
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None


def _packaged() -> Traversable:
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
