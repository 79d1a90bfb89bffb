"""The dispatch worker: sends due outbox rows through the notifier, never the same request twice blindly.

Sends run in `send_concurrency` slots that are refilled as each send ends, not
batch by batch, and rows that are not red may hold at most all slots but one:
whatever else is in flight, a red row that falls due starts at once. A send
whose outcome is unknown is reconciled with the provider's records (see
alerts/reconcile.py) before anything else is decided about it.
"""
from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from prometheus_client import Histogram

from alerts import reconcile
from alerts.config import AlertSettings
from alerts.engine import AlertEngine
from alerts.notifiers import twilio
from alerts.notifiers.base import (
    AttemptFinder,
    LookupFailedError,
    Notification,
    Notifier,
    PermanentSendError,
    RetryableSendError,
    SendReceipt,
    UnknownOutcomeError,
)
from alerts.outbox import OutboxRow
from alerts.vocabulary import AlertState, Channel, OutboxStatus, Severity
from gateway.backoff import exponential_s, jitter_either_way
from gateway.priority import Priority

log = logging.getLogger(__name__)

SEND, RECONCILE = "send", "reconcile"

SEND_SECONDS = Histogram("eldercare_notification_send_seconds", "How long the provider took to take a notification",
                         ["channel", "outcome"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
# For a new alert's first call the row falls due when the gateway judged the press, so this is the gateway's
# own part of publish -> dispatch (the broker hop on the same host adds well under a millisecond).
DISPATCH_DELAY = Histogram("eldercare_dispatch_delay_seconds",
                           "From a notification falling due to its first send starting (publish -> dispatch in the gateway)",
                           ["channel"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def retry_delay_s(settings: AlertSettings, attempts: int, rand: float, retry_after_s: float | None = None) -> float:
    """Exponential backoff with jitter either way, and never sooner than the provider's Retry-After; `rand` in [0, 1)."""
    p = settings.retry
    delay = jitter_either_way(exponential_s(attempts, p.base_delay_s, p.max_delay_s), rand, p.jitter)
    return max(delay, retry_after_s or 0.0)


class Dispatcher:
    def __init__(self, engine: AlertEngine, notifier: Notifier, settings: AlertSettings,
                 clock: Callable[[], float] = time.time, rand: Callable[[], float] = random.random,
                 priority: Priority | None = None) -> None:
        self.engine = engine
        # Held while a red row is being sent (gateway/priority.py: telemetry steps aside meanwhile); a press's
        # round itself runs in the press's own thread (start_due), so nothing waits between queuing and sending.
        self.priority = priority or Priority()
        self.outbox = engine.outbox
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.wake = threading.Event()   # set by the engine's callers when rows are queued, and when a job ends
        self._pool: ThreadPoolExecutor | None = None  # made on first use, gone after stop()
        self._filling = threading.Lock()   # one round of starting jobs at a time (the loop, or start_due)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._jobs = threading.Condition()
        self._running: dict[int, bool] = {}   # row id -> red, for every job submitted and not yet ended
        self._ended = 0                       # jobs ended so far, for run_once to wait on
        # Lookups that failed, per row: how many and when to ask again. Memory only: after a restart
        # every unknown row is simply asked about again, and the outcome window bounds the whole.
        self._lookup_failures: dict[int, int] = {}
        self._lookup_after_ms: dict[int, int] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def recover(self) -> None:
        """After a crash: rows left `sending` may have reached Twilio, so they become unknown and are reconciled."""
        now = self.now_ms()
        with self.engine.changes():
            for row in self.outbox.recover_after_crash(now):
                self.engine.note(row, "notification_unknown", "process stopped mid-send; asking Twilio whether it arrived", now)

    # -- scheduling ----------------------------------------------------------------

    def run_once(self) -> int:
        """Send every due row and reconcile every settled unknown outcome, each once, and return when all ended.

        Slots are refilled as jobs end, most urgent first, so rows that fall due meanwhile
        (a failure moving the plan on, a reconciled row to resend) are started in the same
        call. Returns how many jobs ran.
        """
        tried: set[tuple[str, int]] = set()
        while True:
            with self._jobs:
                ended = self._ended
            started, _ = self._fill(tried)
            with self._jobs:
                if not self._running:
                    if started:
                        continue
                    return len(tried)
                self._jobs.wait_for(functools.partial(self._ended_since, ended))

    def _ended_since(self, seen: int) -> bool:
        """Some job ended after `seen` had ended (call with `_jobs` held)."""
        return self._ended != seen

    def start_due(self) -> None:
        """Start due jobs now, in the calling thread: a press's first call starts without waiting for the
        dispatch thread to be woken and scheduled. Whatever fails here, that thread's next round does again."""
        if self._thread is None or self._stop.is_set():
            return   # not running: the rows wait for start()
        try:
            self._fill()
        except Exception:
            log.exception("starting due notifications failed; the dispatch thread will")

    def _fill(self, tried: set[tuple[str, int]] | None = None) -> tuple[int, int]:
        """Start due jobs in free slots, red first; returns how many started and the time it looked at."""
        with self._filling:
            return self._fill_slots(tried)

    def _fill_slots(self, tried: set[tuple[str, int]] | None) -> tuple[int, int]:
        now = self.now_ms()
        with self._jobs:
            busy = dict(self._running)   # taken before reading the rows: a job ended since shows its final status
        limit = self.settings.send_concurrency + len(busy)
        jobs = [(SEND, row, severity) for row, severity in self.outbox.due_ranked(now, limit)]
        if hasattr(self.notifier, "find"):
            settled = now - int(self.settings.reconcile_after_s * 1000)
            backing_off = len(self._lookup_after_ms)
            jobs += [(RECONCILE, row, severity) for row, severity in self.outbox.unknown_ranked(settled, limit + backing_off)
                     if self._lookup_after_ms.get(row.id, 0) <= now]
        jobs.sort(key=lambda j: -j[2].rank)   # stable: within a grade, sends before lookups, oldest first
        started = 0
        for kind, row, severity in jobs:
            if row.id in busy or (tried is not None and (kind, row.id) in tried):
                continue
            red = severity == Severity.RED
            if not self._slot_free(red):
                continue   # it starts when a job ends: each end wakes the loop
            if tried is not None:
                tried.add((kind, row.id))
            busy[row.id] = red
            self._submit(kind, row, red)
            started += 1
        return started, now

    def _slot_free(self, red: bool) -> bool:
        """A red row may take any free slot; the others leave one free for it (with one slot, they share it)."""
        slots = self.settings.send_concurrency
        with self._jobs:
            if len(self._running) >= slots:
                return False
            return red or sum(not r for r in self._running.values()) < max(1, slots - 1)

    def _submit(self, kind: str, row: OutboxRow, red: bool) -> None:
        if red:
            self.priority.hold(f"send-{row.id}")
        with self._jobs:
            self._running[row.id] = red
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.settings.send_concurrency, thread_name_prefix="alert-send")
            pool = self._pool
        try:
            pool.submit(self._job, self.send if kind == SEND else self.reconcile, row)
        except RuntimeError:   # the pool was shut down by stop(): the row stays as it is for the next start
            with self._jobs:
                del self._running[row.id]
            self.priority.release(f"send-{row.id}")
            raise

    def _job(self, work: Callable[[OutboxRow], None], row: OutboxRow) -> None:
        try:
            work(row)
        except Exception:
            log.exception("dispatch job for outbox row %s failed", row.id)
        finally:
            self.priority.release(f"send-{row.id}")
            with self._jobs:
                del self._running[row.id]
                self._ended += 1
                self._jobs.notify_all()
            self.wake.set()   # a slot is free: the loop looks for the next row at once

    # -- sending -------------------------------------------------------------------

    def notification(self, row: OutboxRow) -> Notification:
        base = self.settings.public_base_url
        gather = twilio.gather_url(base, row.id) if row.channel == Channel.VOICE else None
        try:
            channel = Channel(row.channel)
        except ValueError:   # the engine queues only known channels; a row with another can never be sent
            raise PermanentSendError(f"no channel {row.channel!r}") from None
        return Notification(str(row.id), channel, row.recipient, row.text, row.language,
                            status_callback_url=twilio.status_callback_url(base, row.id), gather_action_url=gather)

    def _provider_send(self, row: OutboxRow) -> SendReceipt:
        """The notifier's send, timed by outcome."""
        started, outcome = time.monotonic(), "unknown"
        try:
            receipt = self.notifier.send(self.notification(row))
            outcome = "sent"
            return receipt
        except RetryableSendError:
            outcome = "retry"
            raise
        except PermanentSendError:
            outcome = "failed"
            raise
        finally:
            SEND_SECONDS.labels(row.channel, outcome).observe(time.monotonic() - started)

    def send(self, row: OutboxRow) -> None:
        # The durable `sending` mark comes first: after a crash past this line the row is never resent blindly.
        claimed_ms = self.now_ms()
        if not self.outbox.claim(row.id, claimed_ms):
            return
        if row.attempts == 0:
            DISPATCH_DELAY.labels(row.channel).observe(max(0, claimed_ms - row.due_ms) / 1000)
        attempts = row.attempts + 1
        try:
            receipt = self._provider_send(row)
        except RetryableSendError as e:
            if attempts < self.settings.retry.max_attempts:
                delay = retry_delay_s(self.settings, attempts, self.rand(), getattr(e, "retry_after_s", None))
                now = self.now_ms()
                with self.engine.changes():
                    self.outbox.set_status(row.id, OutboxStatus.PENDING, now, error=str(e), due_ms=now + int(delay * 1000))
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
                self.outbox.set_status(row.id, OutboxStatus.SENT, now, provider_id=receipt.provider_id)
                self.engine.note(row, "notification_sent", receipt.provider_id, now)
            self.engine.record_delivery(row.id, receipt.status, now)

    def _failed(self, row: OutboxRow, why: str, only_from: tuple[str, ...] | None = None) -> None:
        now = self.now_ms()
        with self.engine.changes():
            if only_from is None:
                self.outbox.set_status(row.id, OutboxStatus.FAILED, now, error=why)
            elif not self.outbox.transition(row.id, only_from, OutboxStatus.FAILED, now, error=why):
                return
            self.engine.note(row, "notification_failed", why, now)
        if self.engine.reevaluate(row.alert_id, now):
            self.wake.set()

    def _unknown(self, row: OutboxRow, why: str) -> None:
        now = self.now_ms()
        with self.engine.changes():
            self.outbox.set_status(row.id, OutboxStatus.UNKNOWN, now, error=why)
            self.engine.note(row, "notification_unknown", f"{why}; asking Twilio whether it arrived", now)

    # -- reconciling unknown outcomes ----------------------------------------------------

    def reconcile(self, row: OutboxRow) -> None:
        """Ask the provider about an unknown outcome: record what it has, resend if it has nothing, else ask an operator."""
        attempt = self.notification(row)
        try:
            finder = cast(AttemptFinder, self.notifier)   # _fill queues lookups only for a notifier with `find`
            listing = finder.find(attempt, reconcile.listing_since_ms(row.due_ms))
        except LookupFailedError as e:
            self._lookup_failed(row, str(e))
            return
        now = self.now_ms()
        others = [o for o in self.outbox.attempts_to(row.recipient, row.channel, reconcile.listing_since_ms(row.due_ms))
                  if o.id != row.id]   # read after the listing: an attempt it shows is no longer `sending` unless it is a rival
        self._lookup_failures.pop(row.id, None)
        self._lookup_after_ms.pop(row.id, None)
        callback = twilio.status_callback_url(self.settings.public_base_url, row.id)   # the URL the attempt carried
        found = reconcile.verdict(reconcile.Attempt(row.channel, row.recipient, row.text, callback, row.due_ms, now),
                                  listing, others)
        if isinstance(found, reconcile.Found):
            self._record_found(row, found.record.provider_id, found.record.status, now)
        elif isinstance(found, reconcile.NoRecord):
            self._resend(row, now)
        else:
            self._ask_operator(row, f"Twilio cannot tell: {found.reason}", now)

    def _record_found(self, row: OutboxRow, provider_id: str, status: str, now: int) -> None:
        with self.engine.changes():
            unsettled = (OutboxStatus.UNKNOWN, OutboxStatus.OPERATOR)
            if not self.outbox.transition(row.id, unsettled, OutboxStatus.SENT, now, provider_id=provider_id):
                return   # a status callback settled it meanwhile
            self.engine.note(row, "notification_reconciled", f"Twilio has {provider_id} ({status}): not sent again", now)
        if status:
            self.engine.record_delivery(row.id, status, now, provider_id)

    def _resend(self, row: OutboxRow, now: int) -> None:
        if row.attempts >= self.settings.retry.max_attempts:
            self._failed(row, f"Twilio has no record of attempt {row.attempts}, the last allowed",
                         only_from=(OutboxStatus.UNKNOWN,))
            return
        with self.engine.changes():
            alert = self.engine.alerts.get(row.alert_id)
            if row.step.isdigit() and (alert is None or alert.state != AlertState.OPEN):
                # The alert was accepted or resolved meanwhile: like any step still waiting then, it is not sent.
                if self.outbox.transition(row.id, (OutboxStatus.UNKNOWN,), OutboxStatus.CANCELLED, now,
                                          error="Twilio has no record; alert closed"):
                    self.engine.note(row, "notification_cancelled", "Twilio has no record and the alert is closed", now)
                return
            if not self.outbox.transition(row.id, (OutboxStatus.UNKNOWN,), OutboxStatus.PENDING, now, due_ms=now,
                                          error="Twilio has no record"):
                return
            self.engine.note(row, "notification_resend", "Twilio has no record of it: sending again", now)
        self.wake.set()

    def _lookup_failed(self, row: OutboxRow, why: str) -> None:
        failures = self._lookup_failures.get(row.id, 0) + 1
        now = self.now_ms()
        if failures >= self.settings.reconcile_tries:
            self._lookup_failures.pop(row.id, None)
            self._lookup_after_ms.pop(row.id, None)
            self._ask_operator(row, f"Twilio's records could not be read ({failures} tries): {why}", now)
            return
        self._lookup_failures[row.id] = failures
        self._lookup_after_ms[row.id] = now + int(retry_delay_s(self.settings, failures, self.rand()) * 1000)
        log.warning("outbox row %s: %s (try %d of %d)", row.id, why, failures, self.settings.reconcile_tries)

    def _ask_operator(self, row: OutboxRow, why: str, now: int) -> None:
        # engine.note records the event and, once this commits, pushes it to the operators' live stream.
        with self.engine.changes():
            if self.outbox.transition(row.id, (OutboxStatus.UNKNOWN,), OutboxStatus.OPERATOR, now, error=why):
                self.engine.note(row, "needs_operator", f"{why}; check whether it arrived", now)

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
        with self._jobs:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.wake.clear()   # before looking: a row queued or a job ended from here on wakes the next round
            try:
                _, looked_at = self._fill()
                wait = self._until_next_due(looked_at)
            except Exception:
                log.exception("dispatch round failed")
                wait = 1.0
            self.wake.wait(wait)

    def _until_next_due(self, looked_at_ms: int) -> float:
        """Seconds until a pending row not yet looked at falls due; at most one, so unknown outcomes are seen each second."""
        next_due = self.outbox.next_due_after(looked_at_ms)   # rows due by then are running or wait for a job's end
        return 1.0 if next_due is None else min(1.0, max(0.0, (next_due - self.now_ms()) / 1000))
