"""The notifier interface: what the dispatcher hands a channel, and the three ways a send can fail."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Notification:
    attempt_id: str                 # the outbox row's id as a string (URL-safe)
    channel: Literal["sms", "voice"]
    to: str                         # E.164
    text: str                       # SMS body, or what the call says
    language: str = "zh-CN"         # BCP-47, used by <Say language=...>
    status_callback_url: str | None = None
    gather_action_url: str | None = None   # voice: where Twilio posts Digits


@dataclass(frozen=True, slots=True)
class SendReceipt:
    provider_id: str                # Twilio SID (or a dry-run id)
    status: str                     # provider's initial status, e.g. "queued"


class SendError(Exception):
    """A send that did not produce a receipt."""


class RetryableSendError(SendError):
    """The provider certainly did not act on the request (rate limit, outage, no connection): send it again later."""

    def __init__(self, message: str, code: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


class PermanentSendError(SendError):
    """The provider refused this request for good (bad number, opted out): sending it again cannot help."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class UnknownOutcomeError(SendError):
    """The request may have reached the provider: resending could call or text someone twice."""


class Notifier(Protocol):
    name: str

    def send(self, notification: Notification) -> SendReceipt: ...
