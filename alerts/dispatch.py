"""The dispatch worker: sends due outbox rows through the notifier, never the same request twice blindly."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from alerts.config import AlertSettings
from alerts.engine import AlertEngine
from alerts.notifiers.base import Notification, Notifier, PermanentSendError, RetryableSendError, UnknownOutcomeError
from alerts.outbox import FAILED, PENDING, SENT, UNKNOWN, OutboxRow

log = logging.getLogger(__name__)


def retry_delay_s(settings: AlertSettings, attempts: int, rand: float, retry_after_s: float | None = None) -> float:
    """Exponential backoff with jitter; `rand` in [0, 1)."""
    p = settings.retry
    delay = min(p.max_delay_s, p.base_delay_s * 2 ** max(0, attempts - 1))
    delay *= 1 + p.jitter * (2 * rand - 1)
    return max(delay, retry_after_s or 0.0)


class Dispatcher:
    def __init__(self, engine: AlertEngine, notifier: Notifier, settings: AlertSettings,
                 clock: Callable[[], float] = time.time, rand: Callable[[], float] = random.random) -> None:
        self.engine = engine
        self.outbox = engine.outbox
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.wake = threading.Event()
        self._pool: ThreadPoolExecutor | None = None  # made on first use, gone after stop()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def recover(self) -> None:
        """After a crash: rows left `sending` may have reached Twilio, so they become unknown, not resent."""
        now = self.now_ms()
        with self.engine.changes():
            for row in self.outbox.recover_after_crash(now):
                self.engine.note(row, "notification_unknown", "process stopped mid-send; waiting for a status callback", now)

    def run_once(self) -> int:
        """Send every due row once, up to `send_concurrency` at a time; returns how many were tried.

        Rows come most urgent first; sending several at once keeps one slow request (Twilio
        answering in seconds, or timing out) from holding up the calls behind it.
        """
        rows = self.outbox.due(self.now_ms())
        if len(rows) <= 1 or self.settings.send_concurrency <= 1:
            for row in rows:
                self.send(row)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.settings.send_concurrency, thread_name_prefix="alert-send")
            list(self._pool.map(self.send, rows))
        return len(rows)

    def notification(self, row: OutboxRow) -> Notification:
        base = self.settings.public_base_url
        gather = f"{base}/twilio/gather/{row.id}" if row.channel == "voice" else None
        return Notification(str(row.id), row.channel, row.recipient, row.text, row.language,
                            status_callback_url=f"{base}/twilio/status/{row.id}", gather_action_url=gather)

    def send(self, row: OutboxRow) -> None:
        # The durable `sending` mark comes first: after a crash past this line the row is never resent blindly.
        if not self.outbox.claim(row.id, self.now_ms()):
            return
        attempts = row.attempts + 1
        try:
            receipt = self.notifier.send(self.notification(row))
        except RetryableSendError as e:
            if attempts < self.settings.retry.max_attempts:
                delay = retry_delay_s(self.settings, attempts, self.rand(), getattr(e, "retry_after_s", None))
                now = self.now_ms()
                with self.engine.changes():
                    self.outbox.set_status(row.id, PENDING, now, error=str(e), due_ms=now + int(delay * 1000))
                    self.engine.note(row, "notification_retry", f"attempt {attempts}: {e}; retry in {delay:.1f}s", now)
                return
            self._failed(row, f"gave up after {attempts} attempts: {e}")
        except PermanentSendError as e:
            self._failed(row, str(e))
        except UnknownOutcomeError as e:
            self._unknown(row, str(e))
        except Exception as e:  # a notifier bug may strike after the request left: treat as unknown, never resend
            log.exception("notifier %s raised unexpectedly", getattr(self.notifier, "name", "?"))
            self._unknown(row, f"unexpected {type(e).__name__}: {e}")
        else:
            now = self.now_ms()
            with self.engine.changes():
                self.outbox.set_status(row.id, SENT, now, provider_id=receipt.provider_id)
                self.engine.note(row, "notification_sent", receipt.provider_id, now)
            self.engine.record_delivery(row.id, receipt.status, now)

    def _failed(self, row: OutboxRow, why: str) -> None:
        now = self.now_ms()
        with self.engine.changes():
            self.outbox.set_status(row.id, FAILED, now, error=why)
            self.engine.note(row, "notification_failed", why, now)
        if self.engine.reevaluate(row.alert_id, now):
            self.wake.set()

    def _unknown(self, row: OutboxRow, why: str) -> None:
        now = self.now_ms()
        with self.engine.changes():
            self.outbox.set_status(row.id, UNKNOWN, now, error=why)
            self.engine.note(row, "notification_unknown", why, now)

    # -- thread ----------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="alert-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.wake.clear()
            try:
                self.run_once()
                next_due = self.outbox.next_due_ms()
            except Exception:
                log.exception("dispatch round failed")
                next_due = None
            wait = 1.0 if next_due is None else min(1.0, max(0.0, (next_due - self.now_ms()) / 1000))
            self.wake.wait(wait)
