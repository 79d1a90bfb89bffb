"""Notification channels behind one small interface: Twilio (SMS and voice) and a dry run that only records."""
from alerts.notifiers.base import (
    Notification,
    Notifier,
    PermanentSendError,
    RetryableSendError,
    SendError,
    SendReceipt,
    UnknownOutcomeError,
)

__all__ = [
    "Notification", "Notifier", "PermanentSendError", "RetryableSendError", "SendError", "SendReceipt",
    "UnknownOutcomeError",
]
