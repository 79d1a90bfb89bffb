"""The alert engine: rules -> alerts -> escalation steps -> outbox rows, each change in one transaction.

Per-device rule state lives in memory only. After a restart it starts empty,
which at worst delays a dwell or consecutive-reading alert by one window and
restarts silence timers; alerts, events, processed keys and the outbox are durable.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from alerts import escalation, lifecycle, wording
from alerts.config import AlertSettings
from alerts.directory import Directory, Resident
from alerts.lifecycle import Alert, AlertEvent
from alerts.outbox import PENDING, Outbox, OutboxRow
from alerts.rules import (
    WATCH_DETECTORS, EquipmentState, Finding, RuleContext, WatchState, detect_equipment, equipment_tick, watch_seen, watch_tick,
)
from alerts.store import AlertStore, Database
from gateway.models import DeviceKind, DeviceMessage

Listener = Callable[[AlertEvent], None]
_OBSERVE_SLICE = 50
CANCELLED = "cancelled"


class AlertEngine:
    def __init__(self, settings: AlertSettings, directory: Directory, db: Database) -> None:
        self.settings = settings
        self.directory = directory
        self.ctx = RuleContext.of(settings, directory)
        self.db = db
        self.alerts = AlertStore(db)
        self.outbox = Outbox(db)
        self.watches: dict[str, WatchState] = {}
        self.equipment: dict[str, EquipmentState] = {}
        self.listeners: list[Listener] = []
        self._events: list[AlertEvent] = []
        # The critical and telemetry lanes observe from their own threads and the ticker runs
        # silence rules: per-device state is read and replaced under this lock, never concurrently.
        self._rules_lock = threading.Lock()

    # -- input ---------------------------------------------------------------

    def observe(self, messages: Sequence[DeviceMessage], now_ms: int) -> int:
        # A telemetry batch holds the rule lock a slice at a time, so an SOS arriving on the
        # critical lane waits for at most one slice, not for the whole batch.
        queued = 0
        for start in range(0, len(messages), _OBSERVE_SLICE):
            with self._rules_lock:
                queued += self._observe(messages[start:start + _OBSERVE_SLICE], now_ms)
        return queued

    def _observe(self, messages: Sequence[DeviceMessage], now_ms: int) -> int:
        """Run the rules on messages not seen before; returns how many outbox rows were queued.

        Only keys of messages that raised findings are recorded: they are the
        ones whose redelivery could open or repeat an alert. Other messages only
        move in-memory state, whose latches make a replay harmless, so the
        telemetry stream costs the database nothing.
        """
        staged_w: dict[str, WatchState] = {}
        staged_e: dict[str, EquipmentState] = {}
        in_batch: set[tuple[str, int]] = set()
        raised: list[tuple[DeviceMessage, list[Finding]]] = []
        for m in messages:
            if m.key in in_batch:  # a key twice in one batch counts once
                continue
            in_batch.add(m.key)
            found = self._run_rules(m, now_ms, staged_w, staged_e)
            if found:
                raised.append((m, found))
        queued = 0
        if raised:
            with self._changes():
                fresh = self.alerts.unseen({m.key for m, _ in raised})
                for m, found in raised:
                    if m.key in fresh:
                        for f in found:
                            queued += self._raise(f, now_ms)
                self.alerts.mark_processed(fresh, now_ms)
        # Memory state changes only once the transaction holding its consequences committed.
        self.watches.update(staged_w)
        self.equipment.update(staged_e)
        return queued

    def _run_rules(self, m: DeviceMessage, now_ms: int, staged_w: dict, staged_e: dict) -> list[Finding]:
        found = []
        if m.kind == DeviceKind.EQUIPMENT:
            state = staged_e.get(m.device_id) or self.equipment.get(m.device_id) or EquipmentState()
            state, f = detect_equipment(state, m, now_ms, self.ctx)
            staged_e[m.device_id] = state
            return [f] if f else []
        state = staged_w.get(m.device_id) or self.watches.get(m.device_id) or WatchState()
        state = watch_seen(state, m, now_ms)
        resident = self.directory.wearer(m.device_id)
        for detect in WATCH_DETECTORS.get(type(m.payload), ()):
            state, f = detect(state, m, resident, self.ctx)
            if f:
                found.append(f)
        staged_w[m.device_id] = state
        return found

    @staticmethod
    def _for_maintenance(alert_type: str) -> bool:
        """A machine's own trouble goes to maintenance; overexertion is about the person on it."""
        return alert_type.startswith("equipment_")

    def _concerned(self, f: Finding) -> Resident | None:
        if self._for_maintenance(f.alert_type):
            return None
        if f.alert_type == "overexertion":
            return self.directory.equipment_user(f.device_id)
        return self.directory.wearer(f.device_id)

    def _raise(self, f: Finding, now_ms: int) -> int:
        """Open an alert for a finding, or record it on the open alert of the same subject and type."""
        resident = self._concerned(f)
        subject = resident.id if resident else f.device_id
        existing = self.alerts.open_alert(subject, f.alert_type)
        if existing is not None:
            alert, ev = lifecycle.repeat(existing, f, now_ms)
            self.alerts.update(alert)
            self._event(ev)
            return 0
        alert = lifecycle.open_alert(f, subject, resident.id if resident else None, now_ms)
        alert_id = self.alerts.insert(alert)
        alert = replace(alert, id=alert_id)
        self._event(AlertEvent(alert_id, now_ms, "opened", f.device_id, f"{f.severity} {f.alert_type} {f.detail}".strip()))
        return self._queue_step(alert, now_ms)

    # -- escalation ----------------------------------------------------------

    def _plan(self, alert: Alert):
        resident = self.directory.resident(alert.resident_id)
        return self.directory.plan_for(resident, alert.severity, self._for_maintenance(alert.alert_type))

    def _repeat_rounds(self, alert: Alert) -> int:
        """Red alerts keep calling until someone accepts (up to the configured rounds); others end with the plan."""
        return self.settings.red_repeat_rounds if alert.severity == "red" else 0

    def _queue_step(self, alert: Alert, now_ms: int) -> int:
        step = escalation.plan_step(self._plan(alert), alert.step, self._repeat_rounds(alert))
        resident = self.directory.resident(alert.resident_id)
        name = resident.name if resident else alert.device_id
        queued = 0
        for phone, lang in self.directory.recipients(step, resident):
            if step.channel == "sms":
                text = wording.alert_sms(name, alert.alert_type, alert.severity, alert.opened_ms, alert.lat, alert.lon,
                                       language=lang, tz=self.settings.timezone, map_url_template=self.settings.map_url_template,
                                       map_datum=self.settings.map_datum)
            else:
                text = wording.call_text(name, alert.alert_type, alert.severity, language=lang)
            if self.outbox.add(alert.id, str(alert.step), phone, step.channel, lang, text, now_ms):
                queued += 1
                self._event(AlertEvent(alert.id, now_ms, "notification_queued", lifecycle.SYSTEM,
                                       f"step {alert.step} {step.channel} {step.target} {phone}"))
        return queued

    def escalate(self, alert: Alert, now_ms: int) -> int:
        """Move one running alert on if its step's deadline passed or its step failed."""
        plan = self._plan(alert)
        outcomes = self.outbox.outcomes(alert.id, alert.step)
        action = escalation.next_action(plan, alert, outcomes, now_ms, self.settings.ack_deadline_s(alert.severity),
                                        self._repeat_rounds(alert))
        if action is None:
            return 0
        alert, ev = escalation.apply(alert, action, now_ms)
        self.alerts.update(alert)
        self._event(ev)
        return self._queue_step(alert, now_ms) if isinstance(action, escalation.StartStep) else 0

    def reevaluate(self, alert_id: int, now_ms: int) -> int:
        with self._changes():
            alert = self.alerts.get(alert_id)
            return self.escalate(alert, now_ms) if alert else 0

    def tick(self, now_ms: int) -> int:
        """Silence rules, unknown-outcome expiry and escalation deadlines; returns outbox rows queued.

        Each part takes the locks only briefly: the silence rules scan every device without
        holding the rule lock or the database, so an SOS and the dispatcher never wait for the scan.
        """
        queued = self._tick_silence(now_ms)
        with self._changes():
            for row in self.outbox.expire_unknown(now_ms, int(self.settings.unknown_outcome_window_s * 1000)):
                self._event(AlertEvent(row.alert_id, now_ms, "needs_operator", lifecycle.SYSTEM,
                                       f"no status for {row.channel} to {row.recipient}: check whether it arrived"))
        for alert in self.alerts.running():
            queued += self.reevaluate(alert.id, now_ms)  # re-read in its own transaction: a person may have accepted
        return queued

    def _tick_silence(self, now_ms: int) -> int:
        with self._rules_lock:
            watches, equipment = list(self.watches.items()), list(self.equipment.items())
        found = []  # (table, device, state scanned, state after, finding): only devices with a finding
        for table, states, rule in ((self.watches, watches, watch_tick), (self.equipment, equipment, equipment_tick)):
            for d, old in states:
                new, f = rule(d, old, now_ms, self.ctx)
                if f is not None:
                    found.append((table, d, old, new, f))
        if not found:
            return 0
        queued = 0
        with self._rules_lock:
            # A device heard from since the scan is not silent any more: its finding is dropped.
            live = [(table, d, new, f) for table, d, old, new, f in found if table.get(d) is old]
            with self._changes():
                for *_, f in live:
                    queued += self._raise(f, now_ms)
            for table, d, new, _ in live:
                table[d] = new
        return queued

    # -- people --------------------------------------------------------------

    def acknowledge(self, alert_id: int, actor: str, now_ms: int) -> Alert:
        return self._close(alert_id, actor, now_ms, lifecycle.acknowledge, "accepted")

    def resolve(self, alert_id: int, actor: str, now_ms: int) -> Alert:
        return self._close(alert_id, actor, now_ms, lifecycle.resolve, "resolved")

    def _close(self, alert_id: int, actor: str, now_ms: int, transition, outcome: str) -> Alert:
        with self._changes() as c:
            alert = self.alerts.get(alert_id)
            if alert is None:
                raise KeyError(alert_id)
            alert, ev = transition(alert, actor, now_ms)
            self.alerts.update(alert)
            self._event(ev)
            # Escalation is over: attempts still waiting to go out would call people for nothing.
            c.execute("UPDATE outbox SET status=?, updated_ms=? WHERE alert_id=? AND status=? AND step GLOB '[0-9]*'",
                      (CANCELLED, now_ms, alert_id, PENDING))
            resident = self.directory.resident(alert.resident_id)
            name = resident.name if resident else alert.device_id
            for phone, lang in self.outbox.sms_recipients(alert_id):
                text = wording.follow_up_sms(name, alert.alert_type, outcome, actor, now_ms, language=lang, tz=self.settings.timezone)
                self.outbox.add(alert_id, outcome, phone, "sms", lang, text, now_ms)
        return alert

    def record_delivery(self, attempt_id: int, status: str, now_ms: int, provider_id: str | None = None) -> bool:
        """A provider status callback; False if it was stale or unknown. A failed delivery may move the plan on."""
        with self._changes():
            row = self.outbox.record_delivery(attempt_id, status, now_ms, provider_id)
            if row is None:
                return False
            self.note(row, "delivery_status", status, now_ms)
            alert = self.alerts.get(row.alert_id)
            if alert and escalation.AttemptOutcome(row.status, row.delivery).failed:
                self.escalate(alert, now_ms)
            return True

    def changes(self):
        """A transaction for callers (the dispatcher) that record events; listeners hear them after commit."""
        return self._changes()

    # -- events --------------------------------------------------------------

    def note(self, row: OutboxRow, kind: str, detail: str, now_ms: int) -> None:
        """Record what happened to a notification attempt on its alert."""
        self._event(AlertEvent(row.alert_id, now_ms, kind, lifecycle.SYSTEM, f"{row.channel} {row.recipient} {detail}".strip()))

    @contextmanager
    def _changes(self) -> Iterator:
        """One transaction; its events reach listeners only if it commits."""
        try:
            with self.db.transaction() as c:
                yield c
        except BaseException:
            with self.db.lock:
                self._events.clear()
            raise
        self._publish()

    def _event(self, ev: AlertEvent) -> None:
        self.alerts.add_event(ev)
        self._events.append(ev)

    def _publish(self) -> None:
        with self.db.lock:
            events, self._events = self._events, []
        for ev in events:
            for listener in self.listeners:
                try:
                    listener(ev)
                except Exception:  # a broken dashboard must not break alerting
                    pass
