"""Detection: the alert rules run over each device's state, kept in memory under one lock.

The critical and telemetry lanes observe from their own threads and the ticker
runs the silence rules: per-device state is read and replaced under `lock`,
never concurrently. Rules run on a copy (`Staged`); the caller commits the
consequences (alerts, outbox rows) first and only then `apply`s the new state,
so a failed transaction leaves the state as it was and a redelivery is judged
again. What is needed to judge silence after a restart is saved and restored
as JSON (`saved`, `restore`).
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeAlias, TypeVar

import orjson

from alerts.config import AlertSettings
from alerts.directory import Directory
from alerts.rules import (
    WATCH_DETECTORS,
    EquipmentState,
    Finding,
    RuleContext,
    WatchState,
    detect_button,
    detect_equipment,
    equipment_tick,
    equipment_tick_candidates,
    refused_reading,
    watch_seen,
    watch_tick,
    watch_tick_candidates,
    with_changes,
)
from alerts.store import SavedState
from alerts.vocabulary import AlertType
from gateway.models import DeviceKind, DeviceMessage
from gateway.observer import Refusal

DeviceState: TypeAlias = WatchState | EquipmentState
_S = TypeVar("_S", WatchState, EquipmentState)


class StateTable(Generic[_S]):
    """Device id -> rule state, each kept as a plain tuple of its values.

    The collector stops tracking a plain tuple of numbers, strings and None the first time it meets
    one; a NamedTuple (or any object) it tracks for ever. A million watches' states kept as objects
    made every full collection walk them with the whole process stopped, and each replaced state
    (several per message) counted towards the next one. Reads make the state object again (0.3 us)."""

    __slots__ = ("_make", "_rows")

    def __init__(self, cls: type[_S]) -> None:
        self._make: Callable[[Iterable[Any]], _S] = cls._make
        self._rows: dict[str, tuple[Any, ...]] = {}

    def get(self, device_id: str) -> _S | None:
        row = self._rows.get(device_id)
        return None if row is None else self._make(row)

    @property
    def rows(self) -> Mapping[str, tuple[Any, ...]]:
        """Every state's values by device id, as kept (to look at many without making their state objects)."""
        return self._rows

    def values_of(self, device_id: str) -> tuple[Any, ...]:
        """The state's values, as kept (to save them without making the state object)."""
        return self._rows[device_id]

    def __getitem__(self, device_id: str) -> _S:
        return self._make(self._rows[device_id])

    def __setitem__(self, device_id: str, state: _S) -> None:
        self._rows[device_id] = tuple(state)

    def setdefault_all(self, device_ids: Iterable[str], state: _S) -> None:
        """`state` for each of these devices that has none: one tuple shared by all of them (they are values),
        not a million copies of 'never heard'."""
        row, rows = tuple(state), self._rows
        for device_id in device_ids:
            rows.setdefault(device_id, row)

    def update(self, states: dict[str, _S]) -> None:
        rows = self._rows
        for device_id, state in states.items():
            rows[device_id] = tuple(state)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


@dataclass
class Staged:
    """The rules' verdict on a slice of messages, not yet applied: new states and what they found."""

    watches: dict[str, WatchState] = field(default_factory=dict)
    equipment: dict[str, EquipmentState] = field(default_factory=dict)
    raised: list[tuple[DeviceMessage, list[Finding]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SilenceFinding(Generic[_S]):
    """A tick rule's finding with the state it was judged on, to drop it if the device spoke meanwhile."""

    table: StateTable[_S]
    device_id: str
    judged: _S
    after: _S
    finding: Finding

    def still_true(self) -> bool:
        """The device was not heard from since the scan (call with `lock` held)."""
        return self.table.get(self.device_id) == self.judged   # states are values: any change makes another

    def apply(self) -> None:
        self.table[self.device_id] = self.after


# A silence finding on a watch or on a machine.
AnySilenceFinding: TypeAlias = SilenceFinding[WatchState] | SilenceFinding[EquipmentState]


def _tick(table: StateTable[_S], device_ids: Iterable[str],
          candidates: Callable[[Mapping[str, tuple[Any, ...]], Iterable[str], int, RuleContext], list[str]],
          rule: Callable[[str, _S, int, RuleContext], tuple[_S, Finding | None]],
          now_ms: int, ctx: RuleContext) -> list[SilenceFinding[_S]]:
    found: list[SilenceFinding[_S]] = []
    for d in candidates(table.rows, device_ids, now_ms, ctx):
        old = table.get(d)   # one read of a dict the message path replaces entries of: atomic under the GIL
        if old is None:
            continue
        new, f = rule(d, old, now_ms, ctx)
        if f is not None:
            found.append(SilenceFinding(table, d, old, new, f))
    return found


# Below this many devices every tick checks them all.
_SWEEP_FLOOR = 10_000


# What a saved state's JSON array holds, by kind: DeviceStateStore keeps it beside the states.
LAYOUTS: dict[str, tuple[str, ...]] = {DeviceKind.WATCH.value: WatchState._fields,
                                       DeviceKind.EQUIPMENT.value: EquipmentState._fields}


def _revive(cls: type[_S], saved: SavedState, quiet_until_ms: int) -> _S:
    """A saved state, quiet until `quiet_until_ms`. Saved by this version, its values are taken as they
    are; saved by another (fields added or gone since) or as an object, they are taken by name."""
    values = orjson.loads(saved.state)
    if saved.fields == cls._fields:
        values[cls._fields.index("quiet_until_ms")] = quiet_until_ms
        return cls._make(values)
    by_name: dict[str, Any] = values if saved.fields is None else dict(zip(saved.fields, values, strict=True))
    names = set(cls._fields)
    return cls(**({k: v for k, v in by_name.items() if k in names} | {"quiet_until_ms": quiet_until_ms}))


class Detection:
    def __init__(self, settings: AlertSettings, directory: Directory) -> None:
        self.settings = settings
        self.directory = directory
        self.ctx = RuleContext.of(settings, directory)
        self.watches: StateTable[WatchState] = StateTable(WatchState)
        self.equipment: StateTable[EquipmentState] = StateTable(EquipmentState)
        self.lock = threading.Lock()
        self._dirty: set[str] = set()          # devices whose state changed since it was last saved
        self._clock_runs: dict[str, int] = {}  # messages in a row from a device whose clock runs ahead
        # The silence sweep in progress: the devices known when it began, and how far it has got.
        self._sweep_watches: list[str] = []
        self._sweep_machines: list[str] = []
        self._sweep_at = 0

    # -- messages (call with `lock` held) ---------------------------------------------

    def run(self, messages: Sequence[DeviceMessage], now_ms: int) -> Staged:
        """The rules on each message once (a key twice in one slice counts once), on staged state."""
        staged = Staged()
        in_batch: set[tuple[str, int, int]] = set()
        for m in messages:
            if m.key in in_batch:
                continue
            in_batch.add(m.key)
            found = self._run_rules(m, now_ms, staged)
            if found:
                staged.raised.append((m, found))
        return staged

    def apply(self, staged: Staged) -> None:
        """Make staged state current, once the transaction holding its consequences committed."""
        self.watches.update(staged.watches)
        self.equipment.update(staged.equipment)
        self._dirty.update(staged.watches, staged.equipment)
        if self._clock_runs:   # a message on time (every message staged a state) ends a clock episode
            for device_id in [d for d in self._clock_runs if d in staged.watches or d in staged.equipment]:
                del self._clock_runs[device_id]

    def _run_rules(self, m: DeviceMessage, now_ms: int, staged: Staged) -> list[Finding]:
        if m.kind == DeviceKind.EQUIPMENT:
            machine = staged.equipment.get(m.device_id) or self.equipment.get(m.device_id) or EquipmentState()
            machine, f = detect_equipment(machine, m, now_ms, self.ctx)
            staged.equipment[m.device_id] = machine
            return [f] if f else []
        found: list[Finding] = []
        state = staged.watches.get(m.device_id) or self.watches.get(m.device_id) or WatchState()
        state = watch_seen(state, m, now_ms)
        resident = self.directory.wearer(m.device_id)
        for detect in WATCH_DETECTORS.get(type(m.payload), ()):
            state, f = detect(state, m, resident, self.ctx)
            if f:
                found.append(f)
        staged.watches[m.device_id] = state
        return found

    def refused(self, r: Refusal, now_ms: int) -> list[Finding]:
        """A registered machine's reading refused for a value out of range (call with `lock` held)."""
        machine = self.equipment.get(r.device_id)
        if r.kind != DeviceKind.EQUIPMENT or r.reason != "invalid_field" or machine is None:
            return []
        machine, f = refused_reading(r.device_id, machine, r.detail, now_ms, self.ctx)
        self.equipment[r.device_id] = machine
        self._dirty.add(r.device_id)
        return [f] if f else []

    def session_claimed(self, device_id: str, session_id: str, resident_id: str) -> bool:
        """A resident claimed the machine's session: if it is still going on, their safe maximum applies
        from now on (call with `lock` held). False if the machine has moved on to another session."""
        machine = self.equipment.get(device_id)
        if machine is None or machine.session_id != session_id:
            return False
        self.equipment[device_id] = with_changes(machine, claimed_by=resident_id, over_limit=False)
        self._dirty.add(device_id)
        return True

    def clock_ahead(self, m: DeviceMessage, now_ms: int) -> list[Finding]:
        """A message whose device time is too far ahead: the device is heard (it is not silent); a press
        in it is still a press, timed by the gateway's clock; the `clock_wrong_count`-th in a row is a
        finding for maintenance."""
        if m.kind == DeviceKind.EQUIPMENT:
            machine = self.equipment.get(m.device_id) or EquipmentState()
            self.equipment[m.device_id] = with_changes(machine, last_seen_ms=now_ms, silent_fired=False, heard=True)
        else:
            watch = self.watches.get(m.device_id) or WatchState()
            self.watches[m.device_id] = with_changes(watch, last_seen_ms=now_ms, silent_fired=False, heard=True)
        self._dirty.add(m.device_id)
        found: list[Finding] = []
        if m.payload.critical:
            _, press = detect_button(self.watches[m.device_id], m, self.directory.wearer(m.device_id), self.ctx)
            if press is not None:
                found.append(replace(press, at_ms=now_ms, detail=f"{press.detail} (device clock ahead)".strip()))
        run = self._clock_runs[m.device_id] = self._clock_runs.get(m.device_id, 0) + 1
        if run == self.settings.clock_wrong_count:
            wrong = AlertType.DEVICE_CLOCK_WRONG
            ahead_s = (m.payload.ts - now_ms) / 1000
            found.append(Finding(wrong, wrong.severity, m.device_id, now_ms, detail=f"device clock {ahead_s:.0f} s ahead"))
        return found

    # -- the tick ----------------------------------------------------------------

    def scan_silence(self, now_ms: int) -> list[AnySilenceFinding]:
        """Silence and other time-driven rules over the next share of the devices, without holding the lock
        during the scan: an SOS never waits for it.

        A sweep goes through every device known when it began, a share per tick, so that it takes at
        most `silence_sweep_s`; the thresholds these rules judge are minutes long. A fleet under
        `_SWEEP_FLOOR` is swept whole on every tick."""
        if self._sweep_at >= len(self._sweep_watches) + len(self._sweep_machines):
            with self.lock:
                self._sweep_watches, self._sweep_machines = list(self.watches), list(self.equipment)
            self._sweep_at = 0
        total = len(self._sweep_watches) + len(self._sweep_machines)
        share = max(_SWEEP_FLOOR, math.ceil(total * self.settings.tick_interval_s / self.settings.silence_sweep_s))
        start, end = self._sweep_at, self._sweep_at + share
        self._sweep_at = end
        watches, n = self._sweep_watches, len(self._sweep_watches)
        found: list[AnySilenceFinding] = []
        found.extend(_tick(self.watches, watches[start:end], watch_tick_candidates, watch_tick, now_ms, self.ctx))
        found.extend(_tick(self.equipment, self._sweep_machines[max(0, start - n):max(0, end - n)],
                           equipment_tick_candidates, equipment_tick, now_ms, self.ctx))
        return found

    def still_true(self, found: list[AnySilenceFinding]) -> list[AnySilenceFinding]:
        """Those whose device was not heard from since the scan (call with `lock` held)."""
        return [s for s in found if s.still_true()]

    def apply_silence(self, found: list[AnySilenceFinding]) -> None:
        for s in found:
            s.apply()

    # -- across restarts ---------------------------------------------------------------

    def take_changed(self) -> tuple[set[str], list[tuple[str, str, str]]]:
        """The devices changed since the last save and their (device_id, kind, values as a JSON array)
        rows, in `LAYOUTS`' order.

        Only the swap happens under the lock: states are immutable, so they are serialised after it
        is released and an SOS never waits for thousands of devices to be written out."""
        watch, machine = DeviceKind.WATCH.value, DeviceKind.EQUIPMENT.value
        with self.lock:
            dirty, self._dirty = self._dirty, set()
            watches, equipment = self.watches, self.equipment
            states = [(d, watch, watches.values_of(d)) if d in watches else (d, machine, equipment.values_of(d))
                      for d in dirty]
        return dirty, [(d, kind, orjson.dumps(values).decode()) for d, kind, values in states]

    def not_saved(self, dirty: set[str]) -> None:
        """The save of these devices failed: they are saved next time."""
        with self.lock:
            self._dirty |= dirty

    def restore(self, saved: Iterable[SavedState], registered: Iterable[tuple[str, str]], now_ms: int) -> None:
        """State as saved before the last stop, and a fresh 'never heard' state for every other registered
        (device_id, kind). Silence is not judged for `restart_grace_s`, while the broker hands over what the
        devices sent while the gateway was away."""
        quiet_until = now_ms + int(self.settings.restart_grace_s * 1000)
        registered = list(registered)
        with self.lock:
            # Registered devices first: a saved state then replaces the value and keeps the registry's id
            # string as the key, rather than a second copy of a million ids.
            self.watches.setdefault_all((d for d, kind in registered if kind == DeviceKind.WATCH),
                                        WatchState(last_seen_ms=now_ms, heard=False))
            self.equipment.setdefault_all((d for d, kind in registered if kind != DeviceKind.WATCH),
                                          EquipmentState(last_seen_ms=now_ms, heard=False))
            for state in saved:
                if state.kind == DeviceKind.WATCH:
                    self.watches[state.device_id] = _revive(WatchState, state, quiet_until)
                else:
                    self.equipment[state.device_id] = _revive(EquipmentState, state, quiet_until)
