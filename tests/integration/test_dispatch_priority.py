"""Dispatch order through the real notifier: an SOS call never waits behind a backlog of slow SMS.

The engine, the dispatcher's own thread and the Twilio notifier run in this
process against the Prism stand-in, which answers every SMS only after half a
second, as a loaded Twilio would. What is asserted is the order in which the
requests reached the stand-in, never how long anything took.
"""
from __future__ import annotations

import time

import pytest

from alerts.config import AlertSettings
from alerts.directory import parse_community
from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.notifiers.twilio import TwilioNotifier
from alerts.service import AlertService
from alerts.store import Database
from tests.unit.alert_support import COMMUNITY, DUTY, msg

SID = "AC" + "7e" * 16
YELLOW_SMS = 50
SMS_ANSWER_S = 0.5


def community_of(n: int) -> dict:
    """The test community with `n` residents, each wearing watch w0..w{n-1}."""
    [template] = COMMUNITY["residents"]
    residents = [{**template, "id": f"r-{i}", "name": f"Resident {i}", "watch_device_id": f"w{i}"} for i in range(n)]
    return {**COMMUNITY, "residents": residents, "equipment": []}


@pytest.fixture
def service(tmp_path, twilio_standin):
    settings = AlertSettings(db_path=tmp_path / "alerts.db", public_base_url="https://gw.example.test", send_concurrency=4)
    notifier = TwilioNotifier(SID, "priority-test-token", "+15555550199", api_base_url=twilio_standin.base_url)
    engine = AlertEngine(settings, parse_community(community_of(YELLOW_SMS)), Database(settings.db_path))
    svc = AlertService(engine, Dispatcher(engine, notifier, settings), settings)   # real clock, dispatcher thread
    yield svc
    svc.close()


def creates(recorded):
    return [r for r in recorded if r.method == "POST" and r.path.endswith(("/Calls.json", "/Messages.json"))]


def test_red_call_starts_while_yellow_sms_are_in_flight(twilio_standin, service):
    twilio_standin.delay("/Messages.json", SMS_ANSWER_S)
    service.start()
    now = int(time.time() * 1000)
    # Fifty service-key presses: fifty yellow SMS to the service desk, each answered slowly.
    service.observe([msg(f"w{i}", "service_call", 1, now) for i in range(YELLOW_SMS)], now)
    assert len(twilio_standin.wait_for(2)) >= 2, "the yellow backlog never started"
    service.observe([msg("w0", "sos", 2, now)], now)

    sent = creates(twilio_standin.wait_for(YELLOW_SMS + 1, timeout_s=120))
    order = ["call" if r.path.endswith("/Calls.json") else "sms" for r in sent]
    assert order.count("sms") == YELLOW_SMS and order.count("call") == 1, order
    assert sent[order.index("call")].field("To") == DUTY["service_centre"]
    # The call reached Twilio while the backlog was still going out, not after its last SMS.
    sms_after_call = order[order.index("call") + 1:].count("sms")
    assert sms_after_call > 0, f"the SOS call waited for all {YELLOW_SMS} yellow SMS"
