"""What the console shows, assembled from the stores' rows: pure functions, no I/O.

The queue puts what needs a person first: red alerts, and any alert whose plan ran out
with nobody accepting or whose notification outcome only an operator can settle, then
orange, then yellow; oldest first within a grade.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from alerts.directory import Directory
from alerts.lifecycle import Alert, AlertEvent, event_position
from alerts.outbox import OutboxRow
from alerts.vocabulary import AlertState, Channel, Escalation, OutboxStatus, Severity
from alerts.wording import ALERT_NAMES, EN


def type_label(alert_type: str) -> str:
    return ALERT_NAMES.get(alert_type, {}).get(EN, alert_type.replace("_", " "))


@dataclass(frozen=True, slots=True)
class QueueItem:
    alert: Alert
    who: str                  # the resident's name, or the device for a machine's own trouble
    what: str                 # the alert type in words
    urgency: Severity         # the grade the queue shows: red when the alert needs a person whatever its own grade
    deadline_ms: int | None   # when acknowledgement is due; None once someone accepted
    needs_operator: int       # notification attempts whose outcome only a person can settle
    exhausted: bool           # the plan ran out and nobody accepted

    @property
    def sort_key(self) -> str:
        """The queue's order as one string that sorts the same way, so a page can place a card it fetched alone."""
        return f"{2 - self.urgency.rank}-{self.alert.opened_ms:015d}-{self.alert.saved_id:019d}"

    @property
    def problems(self) -> list[str]:
        out = []
        if self.exhausted:
            out.append("Escalation exhausted: nobody answered")
        if self.needs_operator:
            out.append(f"Needs operator: {self.needs_operator} notification(s) with unknown outcome")
        return out


def queue_item(a: Alert, needing: Mapping[int, int], directory: Directory,
               ack_deadline_s: Callable[[Severity], float]) -> QueueItem:
    """How the queue shows one unresolved alert."""
    resident = directory.resident(a.resident_id)
    exhausted = a.escalation == Escalation.EXHAUSTED
    waiting = needing.get(a.saved_id, 0)
    urgency = Severity.RED if exhausted or waiting else a.severity
    deadline = a.round_start_ms + int(ack_deadline_s(a.severity) * 1000) if a.state == AlertState.OPEN else None
    return QueueItem(a, resident.name if resident else a.device_id, type_label(a.alert_type), urgency, deadline,
                     waiting, exhausted)


def queue(alerts: Sequence[Alert], needing: Mapping[int, int], directory: Directory,
          ack_deadline_s: Callable[[Severity], float]) -> list[QueueItem]:
    items = [queue_item(a, needing, directory, ack_deadline_s) for a in alerts if a.state != AlertState.RESOLVED]
    return sorted(items, key=lambda i: i.sort_key)


@dataclass(frozen=True, slots=True)
class QueuePage:
    shown: list[QueueItem]
    more: dict[Severity, int]   # items after the page, by urgency (an empty dict when all are shown)
    size: int | None            # the most cards a page draws; None draws them all

    @property
    def more_total(self) -> int:
        return sum(self.more.values())


def page(items: Sequence[QueueItem], size: int | None) -> QueuePage:
    """The head of the queue an operator works from, and what lies beyond it by colour.

    In a mass event a page of hundreds of cards is slow to draw and nobody reads its tail; the
    operator works top down and can ask for the rest.
    """
    if size is None or len(items) <= size:
        return QueuePage(list(items), {}, size)
    more: dict[Severity, int] = {}
    for i in items[size:]:
        more[i.urgency] = more.get(i.urgency, 0) + 1
    return QueuePage(list(items[:size]), more, size)


@dataclass(frozen=True, slots=True)
class Press:
    at_ms: int
    lat: float | None
    lon: float | None
    detail: str


def presses(alert: Alert, events: Sequence[AlertEvent]) -> list[Press]:
    """Every press (or repeat of the finding) with its time and, where the device sent one, its position.
    An opening event from before positions were recorded in it falls back to the alert's own position."""
    out = []
    for ev in events:
        if ev.kind in ("opened", "repeated"):
            at = event_position(ev) or ((alert.lat, alert.lon) if ev.kind == "opened" else (None, None))
            out.append(Press(ev.at_ms, at[0], at[1], ev.detail))
    return out


# Provider statuses in the words an operator uses: the provider's own "queued" means it took the request (sent,
# from here); voice "in-progress"/"completed" mean someone picked up.
_DELIVERY_WORDS = {"queued": "sent", "accepted": "sent", "in-progress": "answered", "completed": "answered",
                   "no-answer": "no answer", "busy": "busy", "undelivered": "failed", "canceled": "cancelled"}


_STATUS_WORDS: dict[str, str] = {OutboxStatus.PENDING: "queued", OutboxStatus.OPERATOR: "needs operator"}


@dataclass(frozen=True, slots=True)
class AttemptView:
    row: OutboxRow
    state: str          # queued, sending, sent, delivered, failed, ringing, answered, pressed 1, ...
    failed: bool


def attempts(rows: Sequence[OutboxRow], alert: Alert) -> list[AttemptView]:
    out = []
    for r in rows:
        if r.channel == Channel.VOICE and alert.acknowledged_by == r.recipient:
            state = "pressed 1"
        elif r.delivery:
            state = _DELIVERY_WORDS.get(r.delivery, r.delivery)
        else:
            state = _STATUS_WORDS.get(r.status, r.status)
        failed = state in {"failed", "no answer", "busy"} or r.status == OutboxStatus.FAILED
        out.append(AttemptView(r, state, failed))
    return out


def is_online(last_seen_ms: int | None, now_ms: int, silent_after_ms: int) -> bool:
    return last_seen_ms is not None and now_ms - last_seen_ms < silent_after_ms


def device_summary(state: Mapping[str, Any] | None, now_ms: int, silent_after_ms: int) -> dict[str, Any]:
    """Battery, worn and last seen of a device's last state row; online when heard within `silent_after_ms`."""
    if not state:
        return {"online": False, "battery": None, "worn": None, "charging": None, "last_seen_ms": None}
    last = state.get("last_seen_ms")
    worn = state.get("worn")
    return {"online": is_online(last, now_ms, silent_after_ms), "battery": state.get("battery"),
            "worn": None if worn is None else bool(worn), "charging": state.get("charging"), "last_seen_ms": last,
            "lat": state.get("lat"), "lon": state.get("lon"), "heart_rate": state.get("heart_rate")}




# -- fleet ------------------------------------------------------------------------------------------

LOW_BATTERY = 20
FLEET_FILTERS = ("all", "online", "offline", "low battery", "not worn")


@dataclass(frozen=True, slots=True)
class FleetRow:
    device_id: str
    kind: str
    who: str                  # the wearer's name, or the device's label
    online: bool
    battery: int | None
    worn: bool | None
    last_seen_ms: int | None

    @property
    def low_battery(self) -> bool:
        return self.battery is not None and self.battery < LOW_BATTERY


def fleet(rows: Sequence[Mapping[str, Any]], directory: Directory, now_ms: int, silent_after_ms: int, *,
          query: str = "", show: str = "all") -> list[FleetRow]:
    """Every device, filtered by `show` (one of FLEET_FILTERS) and a search of id, label and wearer's name."""
    wanted = query.strip().lower()
    out = []
    for r in rows:
        resident = directory.wearer(r["device_id"])
        last = r.get("last_seen_ms")
        worn = r.get("worn")
        row = FleetRow(r["device_id"], r["kind"], resident.name if resident else (r.get("label") or ""),
                       is_online(last, now_ms, silent_after_ms), r.get("battery"),
                       None if worn is None else bool(worn), last)
        if wanted and wanted not in f"{row.device_id} {row.who} {r.get('label') or ''}".lower():
            continue
        if (show == "online" and not row.online) or (show == "offline" and row.online) \
                or (show == "low battery" and not row.low_battery) or (show == "not worn" and row.worn is not False):
            continue
        out.append(row)
    return out


def track_window(since: str | None, until: str | None, now_ms: int, tz: str, default_h: float = 2.0) -> tuple[int, int]:
    """The (since_ms, until_ms) a person means: "09:00" is today's 9 o'clock in the community's zone (yesterday's if
    that is still to come), "2026-11-27T09:00" a given minute; no `since` is the last `default_h` hours, no `until` now.
    Raises ValueError naming what it could not read."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now_ms / 1000, zone)

    def parse(text: str, what: str) -> int:
        text = text.strip()
        try:
            if len(text) <= 5:
                hour, minute = (int(x) for x in text.split(":"))
                at = today.replace(hour=hour, minute=minute, second=0, microsecond=0)
                if at > today:
                    at -= timedelta(days=1)
            else:
                at = datetime.fromisoformat(text)
                at = at if at.tzinfo else at.replace(tzinfo=zone)
        except ValueError:
            raise ValueError(f"{what}: {text!r} is not a time like 09:00 or 2026-11-27T09:00") from None
        return int(at.timestamp() * 1000)

    until_ms = parse(until, "until") if until else now_ms
    since_ms = parse(since, "since") if since else until_ms - int(default_h * 3_600_000)
    if since_ms >= until_ms:
        raise ValueError("since: must be before until")
    return since_ms, until_ms


def zoom_links(url: str, query: Mapping[str, str], zoom: int) -> dict[str, str]:
    """Addresses of the same page with the map zoomed in, out, and back to the fit, keeping its other parameters."""
    def at(z: int) -> str:
        params = {k: v for k, v in query.items() if k != "zoom" and v}
        return f"{url}?{urlencode({**params, 'zoom': z})}" if z else (f"{url}?{urlencode(params)}" if params else url)
    return {"in": at(zoom + 1), "out": at(zoom - 1), "fit": at(0)}
