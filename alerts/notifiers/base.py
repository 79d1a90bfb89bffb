# alerts/notifiers/base.py
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
class SendError(Exception): ...
class RetryableSendError(SendError):
    def __init__(self, message: str, code: int | None = None, retry_after_s: float | None = None): ...
class PermanentSendError(SendError):
    def __init__(self, message: str, code: int | None = None): ...
class UnknownOutcomeError(SendError): ...   # the request may have reached Twilio
class Notifier(Protocol):
    name: str
    def send(self, notification: Notification) -> SendReceipt: ...
