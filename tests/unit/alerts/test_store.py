"""The alert store: the operators' queue order, and databases made by earlier versions."""
from __future__ import annotations

import sqlite3
from dataclasses import replace

from alerts.lifecycle import open_alert
from alerts.rules import Finding
from alerts.store import SCHEMA_VERSION, AlertStore, Database
from alerts.vocabulary import AlertState, AlertType, Severity
from tests.unit.alert_support import DAY

V2_ALERTS = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY, subject TEXT NOT NULL, alert_type TEXT NOT NULL, severity TEXT NOT NULL,
    state TEXT NOT NULL, resident_id TEXT, device_id TEXT NOT NULL, opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, lat REAL, lon REAL, detail TEXT NOT NULL, step INTEGER NOT NULL,
    step_started_ms INTEGER NOT NULL, escalation TEXT NOT NULL, plan_base INTEGER NOT NULL DEFAULT 0,
    presses INTEGER NOT NULL DEFAULT 1, burst_start_ms INTEGER NOT NULL DEFAULT 0, acknowledged_by TEXT);
INSERT INTO alerts VALUES (1, 'r-1', 'sos', 'red', 'open', 'r-1', 'w1', 1000, 1000, 31.2, 121.4, '', 0, 1000,
                           'running', 0, 1, 1000, NULL);
PRAGMA user_version = 2;
"""


def insert(store: AlertStore, kind: AlertType, severity: Severity, subject: str, opened_ms: int) -> int:
    return store.insert(open_alert(Finding(kind, severity, f"w-{subject}", opened_ms), subject, None, opened_ms))


def test_a_version_2_database_gains_the_console_columns_and_keeps_its_alerts(tmp_path):
    path = tmp_path / "alerts.db"
    with sqlite3.connect(path) as c:
        c.executescript(V2_ALERTS)
    db = Database(path)
    try:
        alert = AlertStore(db).get(1)
        assert alert.alert_type == AlertType.SOS and alert.taken_by is None and alert.round_start_ms == 1000
        assert db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    finally:
        db.close()


def test_the_queue_is_unresolved_alerts_red_first_then_oldest(tmp_path):
    db = Database(tmp_path / "alerts.db")
    store = AlertStore(db)
    late_red = insert(store, AlertType.SOS, Severity.RED, "a", DAY + 50)
    old_yellow = insert(store, AlertType.BATTERY_LOW, Severity.YELLOW, "b", DAY)
    early_red = insert(store, AlertType.FALL, Severity.RED, "c", DAY + 10)
    orange = insert(store, AlertType.HEART_RATE, Severity.ORANGE, "d", DAY + 5)
    gone = insert(store, AlertType.SOS, Severity.RED, "e", DAY)
    a = store.get(gone)
    store.update(replace(a, state=AlertState.RESOLVED))
    assert [a.id for a in store.unresolved()] == [early_red, late_red, orange, old_yellow]
    db.close()
