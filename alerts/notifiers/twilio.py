"""Twilio SMS and voice through the official SDK; Twilio's answers become the project's send errors here, once.

The SDK has no base-URL setting, so a subclass of its HTTP client rewrites the
API prefix (the seam the SDK supports, used by tests to reach a local mock).
Nothing here retries: Twilio has no idempotency key for creating messages or
calls, so only the dispatcher, which knows the attempt's history, decides. When
an outcome is unknown, `find` reads Twilio's Calls or Messages list for it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from xml.sax.saxutils import escape

import requests
import urllib3.exceptions
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.api.v2010.account.call import CallInstance
from twilio.rest.api.v2010.account.message import MessageInstance

from alerts.notifiers.base import (
    LookupFailedError,
    Notification,
    PermanentSendError,
    ProviderListing,
    ProviderRecord,
    RetryableSendError,
    SendReceipt,
    UnknownOutcomeError,
)
from alerts.vocabulary import Channel
from alerts.wording import no_input_goodbye, press_one_prompt, say_language

TWILIO_API = "https://api.twilio.com"
TWIML_MAX_CHARS = 4000          # Twilio's limit for inline `Twiml` on a call
PERMANENT_CODES = frozenset({21211, 21614, 21610, 21408})  # invalid To, not mobile, opted out, region not enabled
RATE_LIMITED = 20429
CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
LIST_PAGE_SIZE = 50
LIST_MAX_RECORDS = 200          # records read back per lookup; more to one number in the window means "cannot tell"
EVENTS_MAX_CALLS = 5            # calls whose events are read for the status-callback URL they were created with

# -- webhooks: where Twilio calls back, and what its callbacks mean -------------------------
# The web routes are declared with these paths, and the URLs given to Twilio are built from them,
# so a route cannot be renamed without the callbacks following it.
STATUS_ROUTE = "/twilio/status/{attempt_id}"
GATHER_ROUTE = "/twilio/gather/{attempt_id}"

# Status callbacks may arrive late, twice or out of order; a status replaces another only if it ranks higher.
SMS_ORDER = {"accepted": 0, "scheduled": 0, "queued": 0, "sending": 1, "sent": 2,
             "delivered": 3, "undelivered": 3, "failed": 3, "read": 4}
CALL_ORDER = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3,
              "completed": 4, "busy": 4, "no-answer": 4, "canceled": 4, "failed": 4}
# Delivery statuses after which the attempt reached nobody.
FAILED_DELIVERY = frozenset({"undelivered", "failed", "busy", "no-answer", "canceled"})


def status_callback_url(public_base_url: str, attempt_id: int) -> str:
    return public_base_url + STATUS_ROUTE.format(attempt_id=attempt_id)


def gather_url(public_base_url: str, attempt_id: int) -> str:
    return public_base_url + GATHER_ROUTE.format(attempt_id=attempt_id)


def moves_forward(channel: str, current: str | None, new: str) -> bool:
    """Whether a delivery status callback advances the attempt (stale and unknown statuses do not)."""
    order = CALL_ORDER if channel == Channel.VOICE else SMS_ORDER
    if new not in order:
        return False
    return current is None or order[new] > order.get(current, -1)


def delivery_failed(delivery: str | None) -> bool:
    return delivery in FAILED_DELIVERY


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """What a status callback says: the attempt's delivery status (lower case) and the provider's SID."""

    status: str
    provider_id: str | None


def parse_status_callback(form: dict[str, str]) -> StatusCallback | None:
    """An SMS's or a call's status callback form; None when it carries no status."""
    status = form.get("MessageStatus") or form.get("SmsStatus") or form.get("CallStatus")
    if not status:
        return None
    return StatusCallback(status.lower(), form.get("MessageSid") or form.get("SmsSid") or form.get("CallSid"))


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def _escaped_within(text: str, budget: int) -> str:
    """The longest prefix of `text` whose escaped form fits `budget` characters (never half an entity)."""
    out, used = [], 0
    for ch in text:
        piece = escape(ch)
        if used + len(piece) > budget:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def voice_twiml(text: str, language: str, gather_action_url: str | None) -> str:
    """The call: the alert, "press 1 to accept" in a one-digit Gather, and a goodbye when nothing is pressed.

    Within Twilio's 4,000-character inline limit: the spoken alert is cut short, the tags never.
    """
    lang = _attr(say_language(language))
    action = f' action="{_attr(gather_action_url)}"' if gather_action_url else ""
    head = f'<Response><Gather numDigits="1"{action} method="POST"><Say language="{lang}">'
    tail = (f'</Say><Say language="{lang}">{escape(press_one_prompt(language))}</Say></Gather>'
            f'<Say language="{lang}">{escape(no_input_goodbye(language))}</Say></Response>')
    return head + _escaped_within(text, TWIML_MAX_CHARS - len(head) - len(tail)) + tail


def say_twiml(text: str, language: str) -> str:
    """A call's answer that only speaks (e.g. the thanks after the callee pressed 1)."""
    return f'<Response><Say language="{_attr(say_language(language))}">{escape(text)}</Say></Response>'


class BaseUrlHttpClient(TwilioHttpClient):  # type: ignore[misc]  # the untyped SDK's client is Any to mypy
    """The SDK's HTTP client sending to `api_base_url` instead of api.twilio.com; remembers each thread's last response."""

    def __init__(self, api_base_url: str = TWILIO_API, timeout_s: float = 10) -> None:
        super().__init__(timeout=timeout_s)
        self.api_base_url = api_base_url.rstrip("/")
        self._last = threading.local()

    @property
    def last_response(self) -> Response | None:
        return getattr(self._last, "response", None)

    def request(self, method: str, url: str, params: Mapping[str, object] | None = None,
                data: Mapping[str, object] | None = None, headers: Mapping[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        if url.startswith(TWILIO_API):
            url = self.api_base_url + url[len(TWILIO_API):]
        self._last.response = None
        response = super().request(method, url, params, data, headers, auth, timeout, allow_redirects)
        self._last.response = response
        return response


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    value = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError):
        return None


def _sent_nothing(e: requests.ConnectionError) -> bool:
    """True when the connection itself failed (refused, DNS, connect timeout, TLS handshake), so no request left."""
    if isinstance(e, requests.ConnectTimeout):
        return True
    reason = e.args[0] if e.args else None
    reason = getattr(reason, "reason", reason)   # requests wraps urllib3's MaxRetryError around the cause
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                               urllib3.exceptions.SSLError))


def classify(e: Exception, retry_after: float | None = None) -> Exception:
    """The project's send error for what the SDK or requests raised."""
    if isinstance(e, (TwilioRestException, TwilioServiceException)):
        status, code = e.status, e.code
        code = code if isinstance(code, int) else None
        said = getattr(e, "msg", "") or getattr(e, "title", "")
        what = f"Twilio HTTP {status}" + (f" code {code}" if code else "") + f": {said}"
        if status == 429 or code == RATE_LIMITED:
            return RetryableSendError(what, code, retry_after)
        if isinstance(status, int) and status >= 500:
            # Twilio may have created the call or message before failing to answer: reconcile, never resend blindly.
            return UnknownOutcomeError(what)
        if code in PERMANENT_CODES or (isinstance(status, int) and 400 <= status < 500):
            return PermanentSendError(what, code)
        return UnknownOutcomeError(what)
    if isinstance(e, requests.ConnectionError) and _sent_nothing(e):
        return RetryableSendError(f"no connection to Twilio: {e}")
    # A read timeout, a dropped connection, anything else: the request may have been acted on.
    return UnknownOutcomeError(f"{type(e).__name__}: {e}")


class TwilioNotifier:
    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, from_number: str, *,
                 api_base_url: str = TWILIO_API, timeout_s: float = 10) -> None:
        self.from_number = from_number
        self.http_client = BaseUrlHttpClient(api_base_url, timeout_s)
        self.client = Client(account_sid, auth_token, http_client=self.http_client)

    def send(self, notification: Notification) -> SendReceipt:
        if notification.channel not in tuple(Channel):
            raise PermanentSendError(f"Twilio has no channel {notification.channel!r}")
        try:
            created = self._create(notification)
        except Exception as e:
            last = self.http_client.last_response
            raise classify(e, retry_after_s(last.headers) if last is not None else None) from e
        return SendReceipt(created.sid, str(created.status or "queued"))

    def _create(self, n: Notification) -> MessageInstance | CallInstance:
        callback = {"status_callback": n.status_callback_url} if n.status_callback_url else {}
        if n.channel == Channel.SMS:
            return self.client.messages.create(to=n.to, from_=self.from_number, body=n.text, **callback)
        return self.client.calls.create(to=n.to, from_=self.from_number,
                                        twiml=voice_twiml(n.text, n.language, n.gather_action_url),
                                        status_callback_event=CALL_EVENTS, **callback)

    def find(self, notification: Notification, since_ms: int) -> ProviderListing:
        """Twilio's calls or messages to `notification.to` from our number created since `since_ms`, newest first."""
        try:
            return self._list(notification, since_ms)
        except Exception as e:
            raise LookupFailedError(f"Twilio's {'Calls' if notification.channel == Channel.VOICE else 'Messages'} list: "
                                    f"{type(e).__name__}: {e}") from e

    def _list(self, n: Notification, since_ms: int) -> ProviderListing:
        resource = self.client.calls if n.channel == Channel.VOICE else self.client.messages
        records: list[ProviderRecord] = []
        complete = True
        # Newest first: reading stops at the first record older than the attempt can be.
        for item in resource.stream(to=n.to, from_=self.from_number, page_size=LIST_PAGE_SIZE):
            created = _epoch_ms(item.date_created)
            if created is not None and created < since_ms:
                break
            if len(records) == LIST_MAX_RECORDS:
                complete = False
                break
            records.append(ProviderRecord(
                str(item.sid), str(item.to or ""), created, str(item.status or ""),
                str(item.direction or "").startswith("outbound"), body=getattr(item, "body", None)))
        if n.channel == Channel.VOICE:
            records[:EVENTS_MAX_CALLS] = [replace(r, status_callback_url=self._created_with_callback(r.provider_id))
                                          for r in records[:EVENTS_MAX_CALLS]]
        return ProviderListing(tuple(records), complete)

    def _created_with_callback(self, call_sid: str) -> str | None:
        """The StatusCallback a call was created with, from its events, where Twilio shows the create request."""
        try:
            events = self.client.calls(call_sid).events.list(limit=20)
        except Exception:   # events are a hint for telling calls apart, not needed to find one
            return None
        for event in events:
            request: dict[str, Any] = event.request if isinstance(event.request, dict) else {}
            found = request.get("parameters")
            params: dict[str, Any] = found if isinstance(found, dict) else {}
            url = params.get("status_callback") or params.get("StatusCallback")
            if url:
                return str(url)
        return None


def _epoch_ms(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1000) if when is not None and hasattr(when, "timestamp") else None
