"""Builders and fakes shared by the alert tests (no tests here)."""
from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from alerts.config import AlertSettings
from alerts.directory import parse_community
from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.notifiers.base import Notification, SendReceipt
from alerts.service import AlertService
from alerts.store import Database, DeviceStateStore
from gateway.models import STREAMS, DeviceKind, DeviceMessage
from tests.fixtures.postgres import database

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local_ms(hour: int, minute: int = 0, day: int = 24) -> int:
    """Epoch ms of a wall-clock time in Shanghai on a fixed date."""
    return int(datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI).timestamp() * 1000)


DAY = local_ms(10)      # 10:00 local, daytime
NIGHT = local_ms(23)    # 23:00 local

DUTY = {"service_centre": "+15555550100", "backup_centre": "+15555550101",
        "service_desk": "+15555550102", "maintenance": "+15555550103"}
DAUGHTER, SON = "+15555550111", "+15555550112"

COMMUNITY = {
    "name": "Test Garden",
    "default_age": 70,
    "duty": DUTY,
    "default_plan": [
        {"channel": "voice", "target": "service_centre"},
        {"channel": "sms", "target": "family_all", "wait_s": 30},
        {"channel": "voice", "target": "backup_centre", "wait_s": 30},
    ],
    "residents": [{
        "id": "r-1", "name": "Wang Guilan", "age": 80, "watch_device_id": "w1", "heart_rate_range": [50, 110],
        "geofence": {"shape": "circle", "lat": 31.2304, "lon": 121.4737, "radius_m": 200},
        "contacts": [{"name": "Wang Li", "phone": DAUGHTER, "relation": "daughter"},
                     {"name": "Zhang Wei", "phone": SON, "relation": "son"}],
    }],
    "equipment": [{"device_id": "eq-home", "resident_id": "r-1"}],
}

INSIDE = (31.2304, 121.4737)
OUTSIDE = (31.2404, 121.4737)   # about 1.1 km north


def msg(device_id: str, stream: str, seq: int, ts: int, **fields) -> DeviceMessage:
    kind = DeviceKind.EQUIPMENT if stream in ("session", "telemetry") else DeviceKind.WATCH
    payload = STREAMS[(kind, stream)].model_validate_json(json.dumps({"ts": ts, "seq": seq, **fields}))
    return DeviceMessage(device_id, kind, payload)


class FakeClock:
    def __init__(self, ms: int = DAY) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, seconds: float) -> int:
        self.ms += int(seconds * 1000)
        return self.ms


class FakeNotifier:
    """Records every send; `script` holds exceptions (or None for success) for successive calls."""

    name = "fake"

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> SendReceipt:
        self.sent.append(notification)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return SendReceipt(f"SM{len(self.sent):032d}", "queued")


def settings(tmp_path, **over) -> AlertSettings:
    return AlertSettings(db_path=tmp_path / "alerts.db", public_base_url="https://gw.example.test", **over)


def make_service(tmp_path, notifier=None, clock=None, community=None, **over) -> AlertService:
    s = settings(tmp_path, **over)
    clock = clock or FakeClock()
    engine = AlertEngine(s, parse_community(community or COMMUNITY), Database(database(tmp_path, s.db_path.name)),
                         DeviceStateStore(database(tmp_path, s.device_state_path.name)))
    return AlertService(engine, Dispatcher(engine, notifier or FakeNotifier(), s, clock, rand=lambda: 0.5), s, clock)
