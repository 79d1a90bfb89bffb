"""The notifier used when Twilio is not configured: it records what would be sent and sends nothing."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from alerts.notifiers.base import Notification, ProviderListing, ProviderRecord, SendReceipt
from alerts.notifiers.twilio import voice_twiml


class DryRunNotifier:
    name = "dry-run"

    def __init__(self, log_path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.log_path = log_path
        self.clock = clock
        self.sent: list[Notification] = []
        self._lock = threading.Lock()
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, n: Notification) -> dict:
        """The JSON line for one send; a call carries the exact TwiML Twilio would have been given."""
        entry = {"time": datetime.fromtimestamp(self.clock(), timezone.utc).isoformat(timespec="milliseconds"),
                 "attempt_id": n.attempt_id, "channel": n.channel, "to": n.to, "language": n.language, "text": n.text}
        if n.channel == "voice":
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
        return ProviderListing(tuple(r for r in records if r.created_ms >= since_ms), True)
