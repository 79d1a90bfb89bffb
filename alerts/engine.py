"""The alert engine: rules -> alerts -> escalation steps -> outbox rows, each change in one transaction.

Per-device rule state lives in memory and is saved every `state_save_interval_s`
(and at stop), so after a restart silence is judged from when each device was
really last heard, and a registered device never heard since is reported too.
Alerts, events, processed keys and the outbox are durable at every commit.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace

from alerts import escalation, lifecycle, wording
from alerts.config import AlertSettings
from alerts.detection import LAYOUTS, Detection
from alerts.directory import Directory, Plan, Resident
from alerts.lifecycle import Alert, AlertEvent
from alerts.notifiers import twilio
from alerts.outbox import Outbox, OutboxRow
from alerts.rules import Finding
from alerts.store import AlertStore, Database, DeviceStateStore
from alerts.vocabulary import AlertState, AlertType, Audience, Channel, Escalation, OutboxStatus, Severity
from gateway.db import Connection
from gateway.models import DeviceMessage
from gateway.observer import Refusal

log = logging.getLogger(__name__)
Listener = Callable[[AlertEvent], None]
_OBSERVE_SLICE = 50


class AlertEngine:
    """Raises, escalates and closes alerts, each change one transaction whose events listeners hear after
    commit; the rules themselves run in `detection`."""

    def __init__(self, settings: AlertSettings, directory: Directory, db: Database,
                 device_states: DeviceStateStore | None = None) -> None:
        self.settings = settings
        self.directory = directory
        self.db = db
        self.alerts = AlertStore(db)
        self.device_states = device_states or DeviceStateStore(settings.device_state_path)
        self.outbox = Outbox(db)
        self.detection = Detection(settings, directory)
        self.listeners: list[Listener] = []
        self._events: list[AlertEvent] = []

    # -- input ---------------------------------------------------------------

    def observe(self, messages: Sequence[DeviceMessage], now_ms: int, durable: bool = True) -> int:
        """Run the rules on messages not seen before; returns how many outbox rows were queued. What they
        raised is on disk when this returns, or (`durable=False`) once the caller's `db.sync()` returns.

        A telemetry batch holds the rule lock a slice at a time, so an SOS arriving on the
        critical lane waits for at most one slice, not for the whole batch. Only keys of
        messages that raised findings are recorded: they are the ones whose redelivery could
        open or repeat an alert. Other messages only move in-memory state, whose latches make
        a replay harmless, so the telemetry stream costs the database nothing.
        """
        queued = 0
        for start in range(0, len(messages), _OBSERVE_SLICE):
            with self.detection.lock:
                staged = self.detection.run(messages[start:start + _OBSERVE_SLICE], now_ms)
                if staged.raised:
                    # On disk before this returns (below), not before the next slice: one wait for the disk a batch.
                    with self._changes(durable=False):
                        fresh = self.alerts.unprocessed({m.key for m, _ in staged.raised})
                        for m, found in staged.raised:
                            if m.key in fresh:
                                for f in found:
                                    queued += self._raise(f, now_ms)
                        self.alerts.mark_processed(fresh, now_ms)
                self.detection.apply(staged)
        if durable:
            self.db.sync()   # nothing to wait for if no slice committed
        return queued

    def session_claimed(self, device_id: str, session_id: str, resident_id: str) -> bool:
        with self.detection.lock:
            return self.detection.session_claimed(device_id, session_id, resident_id)

    def observe_refused(self, refusals: Sequence[Refusal], now_ms: int) -> int:
        """Readings ingest refused: a machine whose sensor gives impossible values needs maintenance."""
        queued = 0
        with self.detection.lock, self._changes():
            for r in refusals:
                for f in self.detection.refused(r, now_ms):
                    queued += self._raise(f, now_ms)
        return queued

    def observe_clock_skew(self, messages: Sequence[DeviceMessage], now_ms: int) -> int:
        """Messages whose device time is too far ahead: ingest dead-letters them, but a press among them is
        still a person asking for help, and a device that keeps doing it needs its clock seen to."""
        queued = 0
        with self.detection.lock, self._changes():
            presses = [m for m in messages if m.payload.critical]
            fresh = self.alerts.unprocessed({m.key for m in presses}) if presses else set()
            for m in messages:
                for f in self.detection.clock_ahead(m, now_ms):
                    if f.alert_type.is_a_press and m.key not in fresh:
                        continue   # a redelivered press: already raised
                    queued += self._raise(f, now_ms)
                if m.key in fresh:
                    fresh.discard(m.key)
                    self.alerts.mark_processed([m.key], now_ms)
        return queued

    def _concerned(self, f: Finding) -> Resident | None:
        """The resident an alert is about: none for a device's own trouble (it goes to maintenance)."""
        audience = f.alert_type.audience
        if audience == Audience.MAINTENANCE:
            return None
        if audience == Audience.EQUIPMENT_USER:
            claimed = self.directory.resident(f.resident_id)
            return claimed if claimed is not None else self.directory.equipment_user(f.device_id)
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
        self._event(AlertEvent(alert_id, now_ms, "opened", f.device_id,
                               f"{f.severity} {f.alert_type} {f.detail}{lifecycle.at_position(f.lat, f.lon)}".strip()))
        return self._queue_step(alert, now_ms)

    # -- escalation ----------------------------------------------------------

    def _plan(self, alert: Alert) -> Plan:
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
        if step is None:   # an alert is only ever moved to a step of its plan (next_action checks)
            raise RuntimeError(f"alert {alert.id} is past the end of its plan at step {alert.step}")
        resident = self.directory.resident(alert.resident_id)
        name = resident.name if resident else alert.device_id
        sends: list[tuple[str, str, Channel, str]] = [
            (phone, lang, step.channel, step.target) for phone, lang in self.directory.recipients(step, resident)]
        sends += [(phone, lang, Channel.VOICE, "repeat press") for phone, lang in extra_calls]
        queued = 0
        for phone, lang, channel, target in sends:
            if channel == Channel.SMS:
                text = wording.alert_sms(name, alert.alert_type, alert.severity, alert.opened_ms, alert.lat, alert.lon,
                                       language=lang, tz=self.settings.timezone, map_url_template=self.settings.map_url_template,
                                       map_datum=self.settings.map_datum)
            else:
                text = wording.call_text(name, alert.alert_type, alert.severity, language=lang)
            if self.outbox.add(alert.saved_id, str(alert.step), phone, channel, lang, text, now_ms):
                queued += 1
                self._event(AlertEvent(alert.saved_id, now_ms, "notification_queued", lifecycle.SYSTEM,
                                       f"step {alert.step} {channel} {target} {phone}"))
        return queued

    def _next_action(self, alert: Alert, outcomes: Iterable[tuple[str, str | None]],
                     now_ms: int) -> escalation.StartStep | escalation.Exhaust | None:
        """The escalation's next move for a running alert, given its current step's (status, delivery) attempts."""
        attempts = [escalation.AttemptOutcome(s, twilio.delivery_failed(d)) for s, d in outcomes]
        return escalation.next_action(self._plan(alert), alert, attempts, now_ms,
                                      self.settings.ack_deadline_s(alert.severity), self._repeat_rounds(alert))

    def escalate(self, alert: Alert, now_ms: int) -> int:
        """Move one running alert on if its step's deadline passed or its step failed."""
        action = self._next_action(alert, self.outbox.outcomes(alert.saved_id, alert.step), now_ms)
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
        # One read for every running alert, and a transaction only for those due to move on: a storm of
        # hundreds of running alerts took a transaction each, every second, each holding the database
        # an SOS and the dispatcher wait for (78 ms a tick at 300 running alerts). The read is a snapshot,
        # off the writer's lock: under the writer's lock it held an SOS's commit up to 786 ms at a thousand
        # running alerts. It only picks candidates; `reevaluate` decides on the alert as it is then.
        with self.db.snapshot():
            running, outcomes = self.alerts.running(), self.outbox.running_outcomes()
        for alert in running:
            if self._next_action(alert, outcomes.get(alert.saved_id, ()), now_ms) is not None:
                queued += self.reevaluate(alert.saved_id, now_ms)  # re-read in its own transaction: a person may have accepted
        return queued

    def _tick_silence(self, now_ms: int) -> int:
        found = self.detection.scan_silence(now_ms)
        if not found:
            return 0
        queued = 0
        with self.detection.lock:
            live = self.detection.still_true(found)   # a device heard from since the scan is not silent
            with self._changes():
                for s in live:
                    queued += self._raise(s.finding, now_ms)
            self.detection.apply_silence(live)
        return queued

    # -- state across restarts ---------------------------------------------------

    def save_states(self, now_ms: int) -> int:
        """Save the rule state of devices heard since the last save; returns how many."""
        dirty, rows = self.detection.take_changed()
        try:
            self.device_states.save(rows, LAYOUTS, now_ms)
        except BaseException:
            self.detection.not_saved(dirty)
            raise
        return len(rows)

    def restore(self, registered: Iterable[tuple[str, str]], now_ms: int) -> None:
        """Rule state as saved before the last stop; every other registered device starts 'never heard'."""
        self.detection.restore(self.device_states.load(), registered, now_ms)
        log.info("alert rules: state of %d watches and %d machines restored",
                 len(self.detection.watches), len(self.detection.equipment))

    def prune(self, now_ms: int) -> dict[str, int]:
        """Forget processed keys past their window and resolved alerts past the audit retention."""
        s = self.settings
        return self.alerts.prune(now_ms, int(s.processed_window_h * 3_600_000), int(s.audit_retention_days * 86_400_000))

    # -- people --------------------------------------------------------------

    def acknowledge(self, alert_id: int, actor: str, now_ms: int) -> Alert:
        return self._close(alert_id, actor, now_ms, lifecycle.acknowledge, "accepted")

    def resolve(self, alert_id: int, actor: str, now_ms: int, note: str = "") -> Alert:
        return self._close(alert_id, actor, now_ms, lambda a, who, at: lifecycle.resolve(a, who, at, note), "resolved")

    def take(self, alert_id: int, actor: str, now_ms: int) -> Alert:
        """An operator takes the alert on; nothing is sent and escalation is unchanged."""
        with self._changes():
            alert = self.alerts.get(alert_id)
            if alert is None:
                raise KeyError(alert_id)
            alert, ev = lifecycle.take(alert, actor, now_ms)
            self.alerts.update(alert)
            self._event(ev)
        return alert

    def _close(self, alert_id: int, actor: str, now_ms: int,
               transition: Callable[[Alert, str, int], tuple[Alert, AlertEvent]], outcome: str) -> Alert:
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
                text = wording.follow_up_sms(name, alert.alert_type, outcome, actor, now_ms, language=lang,
                                             tz=self.settings.timezone)
                self.outbox.add(alert_id, outcome, phone, Channel.SMS, lang, text, now_ms)
        return alert

    def settle_attempt(self, attempt_id: int, arrived: bool, actor: str, now_ms: int) -> OutboxRow:
        """An operator settles a send whose outcome nobody could tell: it arrived (a person checked), or it did
        not and goes out again now. KeyError if there is no such attempt; TransitionError if it needs no settling."""
        with self._changes():
            row = self.outbox.get(attempt_id)
            if row is None:
                raise KeyError(attempt_id)
            status = OutboxStatus.SENT if arrived else OutboxStatus.PENDING
            if not self.outbox.transition(attempt_id, (OutboxStatus.OPERATOR,), status, now_ms, due_ms=now_ms):
                raise lifecycle.TransitionError(f"attempt {attempt_id} is {row.status}: nothing for an operator to settle")
            self._event(AlertEvent(row.alert_id, now_ms, "operator_settled", actor,
                                   f"{row.channel} {row.recipient} " + ("arrived" if arrived else "sent again")))
            return row

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

    def changes(self) -> AbstractContextManager[Connection]:
        """A transaction for callers (the dispatcher) that record events; listeners hear them after commit."""
        return self._changes()

    # -- events --------------------------------------------------------------

    def note(self, row: OutboxRow, kind: str, detail: str, now_ms: int) -> None:
        """Record what happened to a notification attempt on its alert."""
        self._event(AlertEvent(row.alert_id, now_ms, kind, lifecycle.SYSTEM, f"{row.channel} {row.recipient} {detail}".strip()))

    @contextmanager
    def _changes(self, durable: bool = True) -> Iterator[Connection]:
        """One transaction; its events reach listeners only if it commits."""
        try:
            with self.db.transaction(durable) as c:
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
