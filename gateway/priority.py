"""Urgent work first: while a press is on its way to a person, telemetry steps aside.

One Python process runs the critical lane, the telemetry lane, the alert rules and
the dispatcher, and only one thread holds the interpreter at a time. Under load an
SOS's thread hand-overs (network thread -> lane worker -> dispatcher -> sender) each
queued behind the telemetry threads for the interpreter lock: tens of milliseconds
at p99 per hop. So the critical path holds `Priority` from the moment a critical
message arrives until its notification's request has gone out, and the telemetry
threads call `yield_to_urgent()` at points where they hold no lock the critical
path needs (between batches). Every hold expires by itself after `hold_s`, and a
wait never lasts longer than that, so neither a hold that is never released nor a
storm of presses can stall telemetry: it moves on by at least a batch per `hold_s`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Priority:
    """Named holds with deadlines; background work waits while any hold is live."""

    def __init__(self, hold_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self._clock = clock
        self._lock = threading.Lock()
        self._holds: dict[str, float] = {}   # holder -> monotonic deadline
        self._clear = threading.Event()
        self._clear.set()
        self.yielded = 0   # times background work waited (tests read it)

    def hold(self, holder: str) -> None:
        """Urgent work by `holder` is under way (again: the deadline moves on)."""
        with self._lock:
            self._holds[holder] = self._clock() + self.hold_s
            self._clear.clear()

    def release(self, holder: str) -> None:
        with self._lock:
            self._holds.pop(holder, None)
            if not self._holds:
                self._clear.set()

    def urgent(self) -> bool:
        """A live hold exists (expired ones are dropped)."""
        if self._clear.is_set():
            return False
        with self._lock:
            now = self._clock()
            for holder in [h for h, until in self._holds.items() if until <= now]:
                del self._holds[holder]
            if not self._holds:
                self._clear.set()
                return False
            return True

    def _latest_deadline(self) -> float:
        with self._lock:
            return max(self._holds.values(), default=0.0)

    def yield_to_urgent(self) -> None:
        """Return at once when nothing urgent is under way; otherwise wait until every hold is released or
        has expired, and never longer than `hold_s` in all: under a storm of presses, whose holds keep being
        renewed, background work still moves on by a step each time."""
        if self._clear.is_set():
            return
        self.yielded += 1
        give_up = self._clock() + self.hold_s
        while self.urgent() and (now := self._clock()) < give_up:
            self._clear.wait(max(0.0, min(self._latest_deadline(), give_up) - now))

