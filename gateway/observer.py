"""The seam between ingest and whatever reacts to device messages (the alert engine)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.models import DeviceKind, DeviceMessage


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message from a named device that ingest refused (dead-lettered), and why."""

    device_id: str
    kind: DeviceKind
    reason: str      # the dead letter's stable code, e.g. invalid_field
    detail: str


class MessageObserver(Protocol):
    """Sees every accepted message once ingest has judged it.

    Called in the ingest thread, in arrival order, *before* the messages are
    acknowledged to the broker: whatever the observer must not lose it has to
    have made durable when `observe` returns. A crash after `observe` and
    before the ack redelivers the messages, so an observer must itself
    recognise a repeated `(device_id, ts, seq)`.
    """

    def observe(self, messages: Sequence[DeviceMessage], now_ms: int) -> None: ...

    def observe_clock_skew(self, messages: Sequence[DeviceMessage], now_ms: int) -> None:
        """Valid messages whose device time is too far ahead of the gateway's clock. Ingest dead-letters
        them (their time would corrupt stored state), but an SOS among them is still a person pressing."""

    def observe_refused(self, refusals: Sequence[Refusal], now_ms: int) -> None:
        """Messages refused for what they said (a value out of range, bad JSON): a machine that keeps sending
        readings no sensor could give has a broken sensor. A redelivery of a refused message comes again."""
