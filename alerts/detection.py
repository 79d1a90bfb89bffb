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

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

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
    watch_seen,
    watch_tick,
)
from alerts.vocabulary import AlertType
from gateway.models import DeviceKind, DeviceMessage

DeviceState = WatchState | EquipmentState


@dataclass
class Staged:
    """The rules' verdict on a slice of messages, not yet applied: new states and what they found."""

    watches: dict[str, WatchState] = field(default_factory=dict)
    equipment: dict[str, EquipmentState] = field(default_factory=dict)
    raised: list[tuple[DeviceMessage, list[Finding]]] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class SilenceFinding:
    """A tick rule's finding with the state it was judged on, to drop it if the device spoke meanwhile."""

    table: dict
    device_id: str
    judged: DeviceState
    after: DeviceState
    finding: Finding


class Detection:
    def __init__(self, settings: AlertSettings, directory: Directory) -> None:
        self.settings = settings
        self.directory = directory
        self.ctx = RuleContext.of(settings, directory)
        self.watches: dict[str, WatchState] = {}
        self.equipment: dict[str, EquipmentState] = {}
        self.lock = threading.Lock()
        self._dirty: set[str] = set()          # devices whose state changed since it was last saved
        self._clock_runs: dict[str, int] = {}  # messages in a row from a device whose clock runs ahead

    # -- messages (call with `lock` held) ---------------------------------------------

    def run(self, messages: Sequence[DeviceMessage], now_ms: int) -> Staged:
        """The rules on each message once (a key twice in one slice counts once), on staged state."""
        staged = Staged()
        in_batch: set[tuple[str, int, int]] = set()
        for m in messages:
            staged.devices.add(m.device_id)
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
        for device_id in staged.devices & self._clock_runs.keys():
            del self._clock_runs[device_id]  # a message on time ends a clock episode

    def _run_rules(self, m: DeviceMessage, now_ms: int, staged: Staged) -> list[Finding]:
        if m.kind == DeviceKind.EQUIPMENT:
            machine = staged.equipment.get(m.device_id) or self.equipment.get(m.device_id) or EquipmentState()
            machine, f = detect_equipment(machine, m, now_ms, self.ctx)
            staged.equipment[m.device_id] = machine
            return [f] if f else []
        found = []
        state = staged.watches.get(m.device_id) or self.watches.get(m.device_id) or WatchState()
        state = watch_seen(state, m, now_ms)
        resident = self.directory.wearer(m.device_id)
        for detect in WATCH_DETECTORS.get(type(m.payload), ()):
            state, f = detect(state, m, resident, self.ctx)
            if f:
                found.append(f)
        staged.watches[m.device_id] = state
        return found

    def clock_ahead(self, m: DeviceMessage, now_ms: int) -> list[Finding]:
        """A message whose device time is too far ahead: the device is heard (it is not silent); a press
        in it is still a press, timed by the gateway's clock; the `clock_wrong_count`-th in a row is a
        finding for maintenance."""
        table: dict = self.equipment if m.kind == DeviceKind.EQUIPMENT else self.watches
        state = table.get(m.device_id) or (EquipmentState() if m.kind == DeviceKind.EQUIPMENT else WatchState())
        table[m.device_id] = replace(state, last_seen_ms=now_ms, silent_fired=False, heard=True)
        self._dirty.add(m.device_id)
        found = []
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

    def scan_silence(self, now_ms: int) -> list[SilenceFinding]:
        """Silence and other time-driven rules over every device, without holding the lock during the scan:
        an SOS never waits for it."""
        with self.lock:
            watches, equipment = list(self.watches.items()), list(self.equipment.items())
        found = []
        for table, states, rule in ((self.watches, watches, watch_tick), (self.equipment, equipment, equipment_tick)):
            for d, old in states:
                new, f = rule(d, old, now_ms, self.ctx)
                if f is not None:
                    found.append(SilenceFinding(table, d, old, new, f))
        return found

    def still_true(self, found: list[SilenceFinding]) -> list[SilenceFinding]:
        """Those whose device was not heard from since the scan (call with `lock` held)."""
        return [s for s in found if s.table.get(s.device_id) is s.judged]

    def apply_silence(self, found: list[SilenceFinding]) -> None:
        for s in found:
            s.table[s.device_id] = s.after

    # -- across restarts ---------------------------------------------------------------

    def take_changed(self) -> tuple[set[str], list[tuple[str, str, str]]]:
        """The devices changed since the last save and their (device_id, kind, state as JSON) rows.

        Only the swap happens under the lock: states are immutable, so they are serialised after it
        is released and an SOS never waits for thousands of devices to be written out."""
        with self.lock:
            dirty, self._dirty = self._dirty, set()
            states = [(d, DeviceKind.WATCH.value, self.watches[d]) if d in self.watches
                      else (d, DeviceKind.EQUIPMENT.value, self.equipment[d]) for d in dirty]
        return dirty, [(d, kind, orjson.dumps(state).decode()) for d, kind, state in states]

    def not_saved(self, dirty: set[str]) -> None:
        """The save of these devices failed: they are saved next time."""
        with self.lock:
            self._dirty |= dirty

    def restore(self, saved: Iterable[tuple[str, str, str]], registered: Iterable[tuple[str, str]], now_ms: int) -> None:
        """State as saved before the last stop, and a fresh 'never heard' state for every other registered
        (device_id, kind). Silence is not judged for `restart_grace_s`, while the broker hands over what the
        devices sent while the gateway was away."""
        quiet_until = now_ms + int(self.settings.restart_grace_s * 1000)
        with self.lock:
            for device_id, kind, state in saved:
                cls, table = self._kind(kind)
                values = {k: v for k, v in orjson.loads(state).items() if k in cls.__slots__}
                table[device_id] = replace(cls(**values), quiet_until_ms=quiet_until)
            for device_id, kind in registered:
                cls, table = self._kind(kind)
                if device_id not in table:
                    table[device_id] = cls(last_seen_ms=now_ms, heard=False)

    def _kind(self, kind: str) -> tuple[type, dict]:
        return (WatchState, self.watches) if kind == DeviceKind.WATCH else (EquipmentState, self.equipment)
