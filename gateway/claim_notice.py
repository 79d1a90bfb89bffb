"""Tells a fitness machine its session's claim code, on the machine's `cmd` topic.

The machine shows the code as a QR link and reads it out: a resident who wants the session in their
exercise record scans it (dashboards/exercise.py). It is sent when a session opens (so a resident can
claim it during the workout) and again when it closes, with the time the code stops working.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import orjson

from gateway.exercise_store import SessionNews, spaced
from gateway.models import DeviceKind
from gateway.topics import Topics

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]


def notice(news: SessionNews, claim_url: str) -> dict[str, object]:
    """The command a machine receives (JSON)."""
    body: dict[str, object] = {"type": "claim", "session_id": news.session_id, "code": spaced(news.claim_code),
                               "url": f"{claim_url}{news.claim_code}", "state": "closed" if news.closed else "open"}
    if news.claimable_until_ms is not None:
        body["expires_ts"] = news.claimable_until_ms
    return body


class ClaimNotices:
    """Publishes each session's notice; a failure is logged and never holds up ingest (the code stays in
    the store, and the claim page takes it typed in as well)."""

    def __init__(self, topics: Topics, claim_url: str, publish: Publish) -> None:
        self.topics = topics
        self.claim_url = claim_url
        self.publish = publish

    def __call__(self, news: Sequence[SessionNews]) -> None:
        for n in news:
            try:
                self.publish(self.topics.command(DeviceKind.EQUIPMENT, n.device_id),
                             orjson.dumps(notice(n, self.claim_url)))
            except Exception:
                log.warning("could not send the claim code of session %s to %s", n.session_id, n.device_id, exc_info=True)
