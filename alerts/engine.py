"""The alert engine: rules -> alerts -> escalation steps -> outbox rows, each change in one transaction.

Per-device rule state lives in memory and is saved every `state_save_interval_s`
(and at stop), so after a restart silence is judged from when each device was
really last heard, and a registered device never heard since is reported too.
Alerts, events, processed keys and the outbox are durable at every commit.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import orjson

from alerts import escalation, lifecycle, wording
from alerts.config import AlertSettings
from alerts.directory import Directory, Resident
from alerts.lifecycle import Alert, AlertEvent
from alerts.notifiers import twilio
from alerts.outbox import Outbox, OutboxRow
from alerts.rules import (
    WATCH_DETECTORS, EquipmentState, Finding, RuleContext, WatchState, detect_button, detect_equipment, equipment_tick,
    watch_seen, watch_tick,
)
from alerts.vocabulary import AlertState, AlertType, Audience, Channel, Escalation, Severity
from alerts.store import AlertStore, Database
from gateway.models import DeviceKind, DeviceMessage

log = logging.getLogger(__name__)
Listener = Callable[[AlertEvent], None]
_OBSERVE_SLICE = 50


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
        self._dirty: set[str] = set()          # devices whose rule state changed since it was last saved
        self._clock_runs: dict[str, int] = {}  # messages in a row from a device whose clock runs ahead
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
                fresh = self.alerts.unprocessed({m.key for m, _ in raised})
                for m, found in raised:
                    if m.key in fresh:
                        for f in found:
                            queued += self._raise(f, now_ms)
                self.alerts.mark_processed(fresh, now_ms)
        # Memory state changes only once the transaction holding its consequences committed.
        self.watches.update(staged_w)
        self.equipment.update(staged_e)
        self._dirty.update(staged_w, staged_e)
        if self._clock_runs:
            for m in messages:
                self._clock_runs.pop(m.device_id, None)  # a message on time ends a clock episode
        return queued

    def observe_clock_skew(self, messages: Sequence[DeviceMessage], now_ms: int) -> int:
        """Messages whose device time is too far ahead: ingest dead-letters them, but a press among them is
        still a person asking for help, and a device that keeps doing it needs its clock seen to."""
        queued = 0
        with self._rules_lock, self._changes():
            presses = [m for m in messages if m.payload.critical]
            fresh = self.alerts.unprocessed({m.key for m in presses}) if presses else set()
            for m in messages:
                self._heard(m, now_ms)
                if m.key in fresh:
                    fresh.discard(m.key)
                    state = self.watches.get(m.device_id) or WatchState()
                    _, f = detect_button(state, m, self.directory.wearer(m.device_id), self.ctx)
                    if f is not None:  # timed by the gateway's clock: the device's is wrong
                        queued += self._raise(replace(f, at_ms=now_ms, detail=f"{f.detail} (device clock ahead)".strip()), now_ms)
                        self.alerts.mark_processed([m.key], now_ms)
                run = self._clock_runs.get(m.device_id, 0) + 1
                self._clock_runs[m.device_id] = run
                if run == self.settings.clock_wrong_count:
                    ahead_s = (m.payload.ts - now_ms) / 1000
                    queued += self._raise(Finding(AlertType.DEVICE_CLOCK_WRONG, AlertType.DEVICE_CLOCK_WRONG.severity,
                                                  m.device_id, now_ms, detail=f"device clock {ahead_s:.0f} s ahead"), now_ms)
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

    def _heard(self, m: DeviceMessage, now_ms: int) -> None:
        """A message whose time cannot be used still shows the device is alive: it is not silent."""
        table, fresh = (self.equipment, EquipmentState()) if m.kind == DeviceKind.EQUIPMENT else (self.watches, WatchState())
        state = table.get(m.device_id) or fresh
        table[m.device_id] = replace(state, last_seen_ms=now_ms, silent_fired=False, heard=True)
        self._dirty.add(m.device_id)

    def _concerned(self, f: Finding) -> Resident | None:
        """The resident an alert is about: none for a device's own trouble (it goes to maintenance)."""
        audience = f.alert_type.audience
        if audience == Audience.MAINTENANCE:
            return None
        if audience == Audience.EQUIPMENT_USER:
            return self.directory.equipment_user(f.device_id)
        return self.directory.wearer(f.device_id)

    def _raise(self, f: Finding, now_ms: int) -> int:
        """Open an alert for a finding, or record it on the open alert of the same subject and type."""
        resident = self._concerned(f)
        subject = resident.id if resident else f.device_id
        existing = self.alerts.open_alert(subject, f.alert_type)
        if existing is not None:
            burst_ms = int(self.settings.burst_window_s * 1000)
            again = lifecycle.asks_again(existing, f, burst_ms)
            alert, ev = lifecycle.repeat(existing, f, now_ms, burst_ms)
            self._event(ev)
            if not again:
                self.alerts.update(alert)
                return 0
            return self._restart(alert, now_ms)
        alert = lifecycle.open_alert(f, subject, resident.id if resident else None, now_ms)
        alert_id = self.alerts.insert(alert)
        alert = replace(alert, id=alert_id)
        self._event(AlertEvent(alert_id, now_ms, "opened", f.device_id, f"{f.severity} {f.alert_type} {f.detail}".strip()))
        return self._queue_step(alert, now_ms)

    # -- escalation ----------------------------------------------------------

    def _plan(self, alert: Alert):
        resident = self.directory.resident(alert.resident_id)
        return self.directory.plan_for(resident, alert.severity, AlertType(alert.alert_type).audience == Audience.MAINTENANCE)

    def _repeat_rounds(self, alert: Alert) -> int:
        """Red alerts keep calling until someone accepts (up to the configured rounds); others end with the plan."""
        return self.settings.red_repeat_rounds if alert.severity == Severity.RED else 0

    def _restart(self, alert: Alert, now_ms: int) -> int:
        """A press after acknowledgement, or after the plan ran out: the alert opens again and its plan starts
        over. A red one also calls, at once, whoever acknowledged it (if a phone did) and the duty line."""
        who = alert.acknowledged_by if alert.state == AlertState.ACKNOWLEDGED else None
        why = (f"pressed again after {who} acknowledged" if who else
               "pressed again after the plan ran out" if alert.escalation == Escalation.EXHAUSTED else "pressed again")
        alert, ev = lifecycle.restart(alert, now_ms, why)
        self.alerts.update(alert)
        self._event(ev)
        extra: list[tuple[str, str]] = []
        if alert.severity == Severity.RED:
            resident = self.directory.resident(alert.resident_id)
            lang = resident.language if resident else "zh-CN"
            extra = [(p, lang) for p in (who, self.directory.community.duty.service_centre) if p and p.startswith("+")]
        return self._queue_step(alert, now_ms, extra_calls=extra)

    def _queue_step(self, alert: Alert, now_ms: int, extra_calls: Iterable[tuple[str, str]] = ()) -> int:
        """Queue the current step's notifications (plus `extra_calls`, voice, to these phones)."""
        step = escalation.plan_step(self._plan(alert), alert.plan_position, self._repeat_rounds(alert))
        resident = self.directory.resident(alert.resident_id)
        name = resident.name if resident else alert.device_id
        sends = [(phone, lang, step.channel, step.target) for phone, lang in self.directory.recipients(step, resident)]
        sends += [(phone, lang, Channel.VOICE, "repeat press") for phone, lang in extra_calls]
        queued = 0
        for phone, lang, channel, target in sends:
            if channel == Channel.SMS:
                text = wording.alert_sms(name, alert.alert_type, alert.severity, alert.opened_ms, alert.lat, alert.lon,
                                       language=lang, tz=self.settings.timezone, map_url_template=self.settings.map_url_template,
                                       map_datum=self.settings.map_datum)
            else:
                text = wording.call_text(name, alert.alert_type, alert.severity, language=lang)
            if self.outbox.add(alert.id, str(alert.step), phone, channel, lang, text, now_ms):
                queued += 1
                self._event(AlertEvent(alert.id, now_ms, "notification_queued", lifecycle.SYSTEM,
                                       f"step {alert.step} {channel} {target} {phone}"))
        return queued

    def escalate(self, alert: Alert, now_ms: int) -> int:
        """Move one running alert on if its step's deadline passed or its step failed."""
        plan = self._plan(alert)
        outcomes = [escalation.AttemptOutcome(s, twilio.delivery_failed(d)) for s, d in self.outbox.outcomes(alert.id, alert.step)]
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

    # -- state across restarts ---------------------------------------------------

    def save_states(self, now_ms: int) -> int:
        """Save the rule state of devices heard since the last save; returns how many."""
        with self._rules_lock:
            dirty, self._dirty = self._dirty, set()
            rows = [(d, "watch", orjson.dumps(self.watches[d]).decode()) if d in self.watches
                    else (d, "equipment", orjson.dumps(self.equipment[d]).decode()) for d in dirty]
        try:
            self.alerts.save_device_states(rows, now_ms)
        except BaseException:
            with self._rules_lock:
                self._dirty |= dirty
            raise
        return len(rows)

    def restore(self, registered: Iterable[tuple[str, str]], now_ms: int) -> None:
        """Rule state as saved before the last stop, and a fresh 'never heard' state for every other
        registered (device_id, kind). Silence is not judged for `restart_grace_s`, while the broker
        hands over what the devices sent while the gateway was away."""
        quiet_until = now_ms + int(self.settings.restart_grace_s * 1000)
        with self._rules_lock:
            for device_id, kind, saved in self.alerts.device_states():
                cls, table = (WatchState, self.watches) if kind == DeviceKind.WATCH else (EquipmentState, self.equipment)
                known = set(cls.__slots__)
                values = {k: v for k, v in orjson.loads(saved).items() if k in known}
                table[device_id] = replace(cls(**values), quiet_until_ms=quiet_until)
            for device_id, kind in registered:
                cls, table = (WatchState, self.watches) if kind == DeviceKind.WATCH else (EquipmentState, self.equipment)
                if device_id not in table:
                    table[device_id] = cls(last_seen_ms=now_ms, heard=False)
        log.info("alert rules: state of %d watches and %d machines restored", len(self.watches), len(self.equipment))

    def prune(self, now_ms: int) -> dict[str, int]:
        """Forget processed keys past their window and resolved alerts past the audit retention."""
        s = self.settings
        return self.alerts.prune(now_ms, int(s.processed_window_h * 3_600_000), int(s.audit_retention_days * 86_400_000))

    # -- people --------------------------------------------------------------

    def acknowledge(self, alert_id: int, actor: str, now_ms: int) -> Alert:
        return self._close(alert_id, actor, now_ms, lifecycle.acknowledge, "accepted")

    def resolve(self, alert_id: int, actor: str, now_ms: int) -> Alert:
        return self._close(alert_id, actor, now_ms, lifecycle.resolve, "resolved")

    def _close(self, alert_id: int, actor: str, now_ms: int, transition, outcome: str) -> Alert:
        with self._changes():
            alert = self.alerts.get(alert_id)
            if alert is None:
                raise KeyError(alert_id)
            alert, ev = transition(alert, actor, now_ms)
            self.alerts.update(alert)
            self._event(ev)
            # Escalation is over: attempts still waiting to go out would call people for nothing.
            self.outbox.cancel_pending(alert_id, now_ms)
            resident = self.directory.resident(alert.resident_id)
            name = resident.name if resident else alert.device_id
            for phone, lang in self.outbox.sms_recipients(alert_id):
                text = wording.follow_up_sms(name, alert.alert_type, outcome, actor, now_ms, language=lang, tz=self.settings.timezone)
                self.outbox.add(alert_id, outcome, phone, Channel.SMS, lang, text, now_ms)
        return alert

    def record_delivery(self, attempt_id: int, status: str, now_ms: int, provider_id: str | None = None) -> bool:
        """A provider status callback; False if it was stale or unknown. A failed delivery may move the plan on."""
        with self._changes():
            row = self.outbox.record_delivery(attempt_id, status, now_ms, provider_id, twilio.moves_forward)
            if row is None:
                return False
            self.note(row, "delivery_status", status, now_ms)
            alert = self.alerts.get(row.alert_id)
            if alert and escalation.AttemptOutcome(row.status, twilio.delivery_failed(row.delivery)).failed:
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
                except Exception:  # a broken dashboard must not break alerting, but someone should hear of it
                    log.exception("alert event listener %r failed on %s", listener, ev.kind)
