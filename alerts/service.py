"""AlertService: the alert engine, its dispatch worker and its clock, behind one facade."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from alerts.config import AlertSettings
from alerts.directory import Directory, load_directory
from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine, Listener
from alerts.lifecycle import Alert, AlertEvent, TransitionError
from alerts.notifiers.base import Notification, Notifier
from alerts.outbox import OutboxRow
from alerts.store import Database, DeviceStateStore
from alerts.vocabulary import Channel
from gateway.models import DeviceMessage
from gateway.observer import Refusal
from gateway.priority import Priority

log = logging.getLogger(__name__)
_PRUNE_INTERVAL_MS = 3_600_000


class AlertService:
    """Implements gateway.observer.MessageObserver; `start()` runs the dispatch and tick threads."""

    def __init__(self, engine: AlertEngine, dispatcher: Dispatcher, settings: AlertSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._saved_ms = self._pruned_ms = 0

    @property
    def listeners(self) -> list[Listener]:
        """Callables that receive every committed AlertEvent (for the dashboard's live push)."""
        return self.engine.listeners

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _wake_if(self, queued: int) -> None:
        if queued:
            self.dispatcher.wake.set()

    def observe(self, messages: Sequence[DeviceMessage], now_ms: int) -> None:
        """What the messages raised is on disk when this returns (ingest acknowledges them after)."""
        queued = self.engine.observe(messages, now_ms, durable=False)
        if queued and any(m.payload.critical for m in messages):
            # The press's call starts from this thread, one hand-over fewer; its claim is a durable commit,
            # which puts the alert on disk with it, so the call does not wait for the disk twice.
            self.dispatcher.start_due()
        self.engine.db.sync()
        self._wake_if(queued)

    def observe_refused(self, refusals: Sequence[Refusal], now_ms: int) -> None:
        self._wake_if(self.engine.observe_refused(refusals, now_ms))

    def observe_clock_skew(self, messages: Sequence[DeviceMessage], now_ms: int) -> None:
        self._wake_if(self.engine.observe_clock_skew(messages, now_ms))

    def session_claimed(self, device_id: str, session_id: str, resident_id: str) -> bool:
        """A resident claimed an exercise session; overexertion during the rest of it is judged by their
        safe maximum and raised about them. False if the session is over."""
        return self.engine.session_claimed(device_id, session_id, resident_id)

    def send_text(self, to: str, text: str, language: str) -> None:
        """One SMS outside any alert (a one-time code, a record link), sent now and not retried: the person
        is waiting for it and asks again if it does not come. Raises SendError if the provider refused it."""
        self.dispatcher.notifier.send(Notification(f"text-{secrets.token_hex(8)}", Channel.SMS, to, text, language))

    def tick(self, now_ms: int) -> None:
        """Rules and deadlines every tick; device state saved and old rows pruned on their own intervals."""
        self._wake_if(self.engine.tick(now_ms))
        if now_ms - self._saved_ms >= self.settings.state_save_interval_s * 1000:
            self._saved_ms = now_ms
            self.engine.save_states(now_ms)
        if now_ms - self._pruned_ms >= _PRUNE_INTERVAL_MS:
            self._pruned_ms = now_ms
            removed = self.engine.prune(now_ms)
            prune_log = getattr(self.dispatcher.notifier, "prune", None)
            if prune_log is not None:
                removed["dry_run_log"] = prune_log(now_ms - int(self.settings.dry_run_log_retention_days * 86_400_000))
            if any(removed.values()):
                log.info("alerts: pruned %s", removed)

    def acknowledge(self, alert_id: int, actor: str, now_ms: int | None = None) -> Alert:
        alert = self.engine.acknowledge(alert_id, actor, self._now_ms() if now_ms is None else now_ms)
        self.dispatcher.wake.set()
        return alert

    def resolve(self, alert_id: int, actor: str, now_ms: int | None = None, note: str = "") -> Alert:
        alert = self.engine.resolve(alert_id, actor, self._now_ms() if now_ms is None else now_ms, note)
        self.dispatcher.wake.set()
        return alert

    def settle_attempt(self, attempt_id: int, arrived: bool, actor: str, now_ms: int | None = None) -> OutboxRow:
        """An operator settles a send of unknown outcome: it arrived, or it goes out again now."""
        row = self.engine.settle_attempt(attempt_id, arrived, actor, self._now_ms() if now_ms is None else now_ms)
        self.dispatcher.wake.set()
        return row

    def take(self, alert_id: int, actor: str, now_ms: int | None = None) -> Alert:
        return self.engine.take(alert_id, actor, self._now_ms() if now_ms is None else now_ms)

    def accept_by_attempt(self, attempt_id: int, now_ms: int | None = None) -> Alert | None:
        """A called person pressed 1: they (the attempt's recipient) accept the alert; None if no such attempt."""
        row = self.attempt(attempt_id)
        if row is None:
            return None
        try:
            return self.acknowledge(row.alert_id, row.recipient, now_ms)
        except TransitionError:  # someone accepted first; pressing 1 again changes nothing
            return self.engine.alerts.get(row.alert_id)

    def record_delivery_status(self, attempt_id: int, status: str, now_ms: int | None = None,
                               provider_id: str | None = None) -> bool:
        changed = self.engine.record_delivery(attempt_id, status, self._now_ms() if now_ms is None else now_ms, provider_id)
        if changed:
            self.dispatcher.wake.set()
        return changed

    def attempt(self, attempt_id: int) -> OutboxRow | None:
        return self.engine.outbox.get(attempt_id)

    def alerts(self, state: str | None = None) -> list[Alert]:
        return self.engine.alerts.list(state)

    def alert(self, alert_id: int) -> Alert | None:
        return self.engine.alerts.get(alert_id)

    def unresolved(self) -> list[Alert]:
        """The operators' queue: unresolved alerts, most urgent grade first, then oldest."""
        return self.engine.alerts.unresolved()

    def needing_operator(self) -> dict[int, int]:
        """Alert id -> notification attempts whose outcome only a person can settle."""
        return self.engine.outbox.needing_operator()

    def open_by_severity(self) -> dict[str, int]:
        """Unresolved alerts by grade."""
        return self.engine.alerts.open_by_severity()

    def outbox_counts(self) -> dict[tuple[str, str], int]:
        """Notification attempts by (status, channel)."""
        return self.engine.outbox.counts()

    def attempts(self, alert_id: int) -> list[OutboxRow]:
        """Every notification attempt of an alert, oldest first, with its delivery state."""
        return self.engine.outbox.of_alert(alert_id)

    @property
    def directory(self) -> Directory:
        return self.engine.directory

    def events(self, alert_id: int) -> list[AlertEvent]:
        return self.engine.alerts.events(alert_id)

    def start(self, registered: Iterable[tuple[str, str]] = ()) -> None:
        """Restore rule state, with a 'never heard' state for each registered (device_id, kind) not saved
        (ingest's registry: `Gateway.registry.known()`), and start the dispatch and tick threads."""
        now = self._now_ms()
        self.engine.restore(registered, now)
        self._saved_ms = now
        self.dispatcher.start()
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick_loop, name="alert-tick", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
            self._ticker = None
        self.dispatcher.stop()
        self.engine.save_states(self._now_ms())

    def close(self) -> None:
        self.stop()
        self.engine.db.close()
        self.engine.device_states.close()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.settings.tick_interval_s):
            try:
                self.tick(self._now_ms())
            except Exception:
                log.exception("alert tick failed")


def build_alert_service(settings: AlertSettings, notifier: Notifier, clock: Callable[[], float] = time.time,
                        directory: Directory | None = None,
                        database_url: str = "", priority: Priority | None = None) -> AlertService:
    """Opens the database and the community file; threads start with `start()`.

    `database_url` (the gateway's `[store] url`) puts alerts, outbox and device rule state in PostgreSQL
    beside the operational store; empty, they are SQLite files at `settings.db_path`.
    """
    directory = directory or load_directory(settings.community_file)
    engine = AlertEngine(settings, directory, Database(database_url or settings.db_path),
                         DeviceStateStore(database_url or settings.device_state_path))
    return AlertService(engine, Dispatcher(engine, notifier, settings, clock, priority=priority), settings, clock)
