"""The notifier interface: what the dispatcher hands a channel, the three ways a send can fail, and
what the provider's own records say about an attempt whose outcome is unknown."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from alerts.vocabulary import Channel


@dataclass(frozen=True, slots=True)
class Notification:
    attempt_id: str                 # the outbox row's id as a string (URL-safe)
    channel: Channel
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


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """One call or message as the provider's list API reports it, converted at the edge."""

    provider_id: str                # Twilio SID
    to: str
    created_ms: int | None          # the provider's date_created (second resolution), None if it gave none
    status: str                     # e.g. "queued", "ringing", "delivered"
    outbound: bool                  # created by us through the API, not received
    body: str | None = None         # messages: the text as the provider holds it
    status_callback_url: str | None = None   # calls: from the create request in the call's events, when shown


@dataclass(frozen=True, slots=True)
class ProviderListing:
    """The provider's records to one number from our number, newest first, back to the time asked for."""

    records: tuple[ProviderRecord, ...]
    complete: bool                  # False when the listing stopped at its size limit before reaching that time


class LookupFailedError(Exception):
    """The provider's records could not be read (timeout, refusal, error answer): the outcome is still unknown."""


class Notifier(Protocol):
    name: str

    def send(self, notification: Notification) -> SendReceipt: ...


class AttemptFinder(Protocol):
    """A notifier that can also look its attempts up (Twilio's list API; the dry run's own log)."""

    def find(self, notification: Notification, since_ms: int) -> ProviderListing:
        """Records of `notification.channel` to `notification.to` created since `since_ms`; raises LookupFailedError."""
        ...
