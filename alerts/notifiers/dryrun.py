"""The notifier used when Twilio is not configured: it records what would be sent and sends nothing."""
from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from alerts.notifiers.base import Notification, ProviderListing, ProviderRecord, SendReceipt
from alerts.notifiers.twilio import voice_twiml
from alerts.vocabulary import Channel

_KEEP_IN_MEMORY = 10_000   # recent sends kept for find() without a log, and for tests; older ones are in the log


class DryRunNotifier:
    name = "dry-run"

    def __init__(self, log_path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.log_path = log_path
        self.clock = clock
        self.sent: deque[Notification] = deque(maxlen=_KEEP_IN_MEMORY)
        self._lock = threading.Lock()
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, n: Notification) -> dict[str, str]:
        """The JSON line for one send; a call carries the exact TwiML Twilio would have been given."""
        entry: dict[str, str] = {"time": datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds"),
                 "attempt_id": n.attempt_id, "channel": n.channel, "to": n.to, "language": n.language, "text": n.text}
        if n.channel == Channel.VOICE:
            entry["twiml"] = voice_twiml(n.text, n.language, n.gather_action_url)
        return entry

    def send(self, notification: Notification) -> SendReceipt:
        line = json.dumps(self.record(notification), ensure_ascii=False)
        with self._lock:
            self.sent.append(notification)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")
        return SendReceipt(f"DRY{notification.attempt_id}", "queued")

    def prune(self, older_than_ms: int) -> int:
        """Drop log lines recorded before `older_than_ms`; returns how many. The log is rewritten to a
        temporary file and renamed over, so a crash leaves the old log or the new one, never half of each."""
        if self.log_path is None:
            return 0
        with self._lock:
            if not self.log_path.exists():
                return 0
            cutoff = datetime.fromtimestamp(older_than_ms / 1000, UTC).isoformat(timespec="milliseconds")
            with self.log_path.open(encoding="utf-8") as f:
                lines = f.readlines()
            kept = [line for line in lines if json.loads(line)["time"] >= cutoff]  # ISO UTC times sort as text
            if len(kept) == len(lines):
                return 0
            temp = self.log_path.with_suffix(".tmp")
            with temp.open("w", encoding="utf-8") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.log_path)
            return len(lines) - len(kept)

    def find(self, notification: Notification, since_ms: int) -> ProviderListing:
        """This attempt as the log (or, without one, memory) holds it: after a crash mid-send, whether it was recorded.

        The log is keyed by attempt id, which is as unique as the attempt's status-callback URL.
        """
        n = notification
        with self._lock:
            if self.log_path is None:
                entries = [self.record(s) for s in self.sent]
            elif self.log_path.exists():
                with self.log_path.open(encoding="utf-8") as f:
                    entries = [json.loads(line) for line in f if f'"attempt_id": "{n.attempt_id}"' in line]
            else:
                entries = []
        records = tuple(
            ProviderRecord(f"DRY{e['attempt_id']}", e["to"], int(datetime.fromisoformat(e["time"]).timestamp() * 1000),
                           "queued", True, body=e["text"], status_callback_url=n.status_callback_url)
            for e in entries if e["attempt_id"] == n.attempt_id and e["channel"] == n.channel)
        # created_ms is always set here (every log line has a time); the check is for the type.
        return ProviderListing(tuple(r for r in records if r.created_ms is not None and r.created_ms >= since_ms), True)
