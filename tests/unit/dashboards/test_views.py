"""What the console shows: queue order and flags, deadlines, presses, attempt states, device summary."""
from __future__ import annotations

from dataclasses import replace

from alerts.directory import parse_community
from alerts.lifecycle import AlertEvent, open_alert
from alerts.outbox import OutboxRow
from alerts.rules import Finding
from alerts.vocabulary import AlertState, AlertType, Escalation, Severity
from dashboards import views
from tests.unit.alert_support import COMMUNITY, DAY

DIRECTORY = parse_community(COMMUNITY)
DEADLINES = {Severity.RED: 60.0, Severity.ORANGE: 300.0, Severity.YELLOW: 1800.0}


def alert(alert_id: int, kind: AlertType, severity: Severity, opened_ms: int, device: str = "w1", **changes):
    a = open_alert(Finding(kind, severity, device, opened_ms), "r-1", "r-1" if device == "w1" else None, opened_ms)
    return replace(a, id=alert_id, **changes)


def queue(alerts, needing=None):
    return views.queue(alerts, needing or {}, DIRECTORY, DEADLINES.__getitem__)


def test_red_first_then_oldest_and_anything_nobody_answered_counts_as_red():
    battery = alert(1, AlertType.BATTERY_LOW, Severity.YELLOW, DAY)
    exhausted = alert(2, AlertType.HEART_RATE, Severity.ORANGE, DAY + 1, escalation=Escalation.EXHAUSTED)
    sos = alert(3, AlertType.SOS, Severity.RED, DAY + 2)
    unknown = alert(4, AlertType.SERVICE_CALL, Severity.YELLOW, DAY + 3)
    orange = alert(5, AlertType.GEOFENCE_EXIT, Severity.ORANGE, DAY + 4)
    items = queue([battery, exhausted, sos, unknown, orange], {4: 1})
    assert [i.alert.id for i in items] == [2, 3, 4, 5, 1]
    assert [i.urgency for i in items] == ["red", "red", "red", "orange", "yellow"]
    assert items[0].problems == ["Escalation exhausted: nobody answered"]
    assert items[2].problems == ["Needs operator: 1 notification(s) with unknown outcome"]
    assert items[1].who == "Wang Guilan" and items[1].what == "SOS pressed"


def test_a_page_shows_the_head_of_the_queue_and_counts_the_rest_by_colour():
    items = queue([alert(1, AlertType.SOS, Severity.RED, DAY), alert(2, AlertType.GEOFENCE_EXIT, Severity.ORANGE, DAY),
                   alert(3, AlertType.BATTERY_LOW, Severity.YELLOW, DAY),
                   alert(4, AlertType.BATTERY_LOW, Severity.YELLOW, DAY + 1)])
    head = views.page(items, 1)
    assert [i.alert.id for i in head.shown] == [1]
    assert head.more == {"orange": 1, "yellow": 2} and head.more_total == 3
    assert views.page(items, 4).more == {} and len(views.page(items, None).shown) == 4


def test_the_deadline_is_the_grade_s_ack_time_from_the_round_start_and_none_once_acknowledged():
    sos = alert(1, AlertType.SOS, Severity.RED, DAY, round_started_ms=DAY + 5_000)
    acked = alert(2, AlertType.SOS, Severity.RED, DAY, state=AlertState.ACKNOWLEDGED)
    resolved = alert(3, AlertType.SOS, Severity.RED, DAY, state=AlertState.RESOLVED)
    items = queue([sos, acked, resolved])
    assert [(i.alert.id, i.deadline_ms) for i in items] == [(1, DAY + 65_000), (2, None)]


def test_every_press_has_its_time_and_position_when_the_watch_sent_one():
    a = alert(1, AlertType.SOS, Severity.RED, DAY, lat=31.3, lon=121.5)
    events = [AlertEvent(1, DAY, "opened", "w1", "red sos  at 31.230400,121.473700"),
              AlertEvent(1, DAY + 1, "notification_queued", "system", "step 0 voice"),
              AlertEvent(1, DAY + 90_000, "repeated", "w1", "press 2 at 31.231000,121.474000"),
              AlertEvent(1, DAY + 95_000, "repeated", "w1", "press 2 (same burst)")]
    presses = views.presses(a, events)
    assert [(p.at_ms, p.lat, p.lon) for p in presses] == [
        (DAY, 31.2304, 121.4737), (DAY + 90_000, 31.231, 121.474), (DAY + 95_000, None, None)]


def row(attempt_id: int, channel: str, recipient: str, status: str, delivery: str | None) -> OutboxRow:
    return OutboxRow(attempt_id, 1, "0", recipient, channel, "zh-CN", "text", status, 1, DAY, None, delivery, None)


def test_attempt_states_read_as_an_operator_says_them():
    a = alert(1, AlertType.SOS, Severity.RED, DAY, acknowledged_by="+15555550100")
    rows = [row(1, "voice", "+15555550100", "sent", "completed"), row(2, "voice", "+15555550101", "sent", "in-progress"),
            row(3, "sms", "+15555550111", "sent", "delivered"), row(4, "sms", "+15555550112", "pending", None),
            row(5, "voice", "+15555550102", "sent", "no-answer"), row(6, "sms", "+15555550113", "operator", None)]
    shown = views.attempts(rows, a)
    assert [s.state for s in shown] == ["pressed 1", "answered", "delivered", "queued", "no answer", "needs operator"]
    assert [s.failed for s in shown] == [False, False, False, False, True, False]


def test_a_device_is_online_only_when_heard_recently():
    state = {"last_seen_ms": DAY - 60_000, "battery": 12, "worn": 0, "charging": 0, "lat": 31.2, "lon": 121.4}
    summary = views.device_summary(state, DAY, 300_000)
    assert summary["online"] and summary["battery"] == 12 and summary["worn"] is False
    assert not views.device_summary(state, DAY + 600_000, 300_000)["online"]
    assert views.device_summary(None, DAY, 300_000)["online"] is False


def test_zoom_links_keep_the_page_s_other_parameters_and_fit_drops_the_zoom():
    links = views.zoom_links("/devices/w1", {"since": "09:00", "until": "", "zoom": "3"}, 3)
    assert links == {"in": "/devices/w1?since=09%3A00&zoom=4", "out": "/devices/w1?since=09%3A00&zoom=2",
                     "fit": "/devices/w1?since=09%3A00"}
    assert views.zoom_links("/alerts/7", {}, 1)["fit"] == "/alerts/7"
