"""Whether the provider acted on an attempt whose outcome is unknown, judged from its own records.

Twilio's Call and Message list resources carry no key of ours, and neither
shows the status-callback URL an attempt was created with (see the spec's
`api.v2010.account.call` and `.message`). So a record is this attempt's when:

- both channels: it is outbound, to the attempt's number, created within the
  attempt's window (from when the row fell due, which is no later than its
  claim, to now; each end widened by CLOCK_MARGIN_MS for clock skew and
  Twilio's whole-second times), and no other attempt of ours holds its SID;
- messages: its body is the attempt's text, exactly (our texts name the
  resident, the alert and its time, and are sent without a messaging service,
  so Twilio keeps them as given);
- calls: where the call's events show the status-callback URL it was created
  with, that URL decides, either way (each attempt's URL ends in its row id);
  where they do not, the number and the window alone.

One candidate is the attempt only if no other unsettled attempt of ours
(sending, unknown or with an operator) to the same number, with the same text
for messages, could have made it. No candidate at all, in a listing that
reached back past the window, means Twilio has no record. Anything else
(several candidates, a rival attempt, a listing cut short) means Twilio
cannot tell, and an operator is asked.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alerts.notifiers.base import ProviderListing, ProviderRecord
from alerts.outbox import OutboxRow
from alerts.vocabulary import Channel, OutboxStatus

CLOCK_MARGIN_MS = 30_000
_UNSETTLED = (OutboxStatus.SENDING, OutboxStatus.UNKNOWN, OutboxStatus.OPERATOR)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What we know of the attempt: where it went, what it said, its callback URL and when it can have been made."""

    channel: str
    to: str
    text: str
    status_callback_url: str
    since_ms: int       # when its row fell due (it was claimed at or after this)
    until_ms: int       # when the provider was asked


@dataclass(frozen=True, slots=True)
class Found:
    record: ProviderRecord


@dataclass(frozen=True, slots=True)
class NoRecord:
    pass


@dataclass(frozen=True, slots=True)
class CannotTell:
    reason: str


Verdict = Found | NoRecord | CannotTell


def listing_since_ms(due_ms: int) -> int:
    """How far back the provider's records must be read for an attempt whose row fell due at `due_ms`."""
    return due_ms - CLOCK_MARGIN_MS


def _within(attempt: Attempt, r: ProviderRecord) -> bool:
    # A record without a creation time cannot be placed outside the window, so it stays a candidate.
    return r.created_ms is None or attempt.since_ms - CLOCK_MARGIN_MS <= r.created_ms <= attempt.until_ms + CLOCK_MARGIN_MS


def verdict(attempt: Attempt, listing: ProviderListing, others: Sequence[OutboxRow]) -> Verdict:
    """Found, NoRecord or CannotTell for `attempt`, given the provider's listing and our other attempts to that number."""
    taken = {o.provider_id for o in others if o.provider_id}
    candidates = [r for r in listing.records
                  if r.outbound and r.to == attempt.to and r.provider_id not in taken and _within(attempt, r)]
    if attempt.channel == Channel.SMS:
        candidates = [r for r in candidates if r.body == attempt.text]
    else:
        shown = [r for r in candidates if r.status_callback_url is not None]
        ours = [r for r in shown if r.status_callback_url == attempt.status_callback_url]
        if len(ours) == 1:
            return Found(ours[0])
        if ours:
            return CannotTell(f"{len(ours)} calls carry this attempt's status callback")
        candidates = [r for r in candidates if r.status_callback_url is None]   # the others belong to other attempts
    if not listing.complete:
        return CannotTell("Twilio's listing stopped before reaching the attempt's time")
    if not candidates:
        return NoRecord()
    if len(candidates) > 1:
        return CannotTell(f"{len(candidates)} {attempt.channel} records to {attempt.to} could be this attempt")
    rivals = [o for o in others if o.status in _UNSETTLED and not o.provider_id
              and (attempt.channel != Channel.SMS or o.text == attempt.text)]
    if rivals:
        return CannotTell(f"attempt {rivals[0].id} to the same number is unsettled too, so {candidates[0].provider_id} "
                          "could be either")
    return Found(candidates[0])
