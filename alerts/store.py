"""SQLite persistence of alerts, their events, the processed (device_id, ts, seq) keys and device rule state."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

from alerts.lifecycle import Alert, AlertEvent
from alerts.vocabulary import AlertState, AlertType, Escalation, Severity

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, subject TEXT NOT NULL, alert_type TEXT NOT NULL, severity TEXT NOT NULL,
    state TEXT NOT NULL, resident_id TEXT, device_id TEXT NOT NULL, opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, lat REAL, lon REAL, detail TEXT NOT NULL, step INTEGER NOT NULL,
    step_started_ms INTEGER NOT NULL, escalation TEXT NOT NULL, plan_base INTEGER NOT NULL DEFAULT 0,
    presses INTEGER NOT NULL DEFAULT 1, burst_start_ms INTEGER NOT NULL DEFAULT 0, acknowledged_by TEXT,
    taken_by TEXT, round_started_ms INTEGER NOT NULL DEFAULT 0);
-- One open (unresolved) alert per subject and type: a repeat joins it.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts(subject, alert_type) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_running ON alerts(escalation) WHERE escalation = 'running';
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL REFERENCES alerts(id), at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL, actor TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events(alert_id);
-- Keys of messages that raised findings; (device_id, ts, seq) because a rebooted watch counts seq from 1 again.
CREATE TABLE IF NOT EXISTS processed (
    device_id TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, ts, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processed_by_age ON processed(at_ms);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL REFERENCES alerts(id), step TEXT NOT NULL,
    recipient TEXT NOT NULL, channel TEXT NOT NULL, language TEXT NOT NULL, text TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, due_ms INTEGER NOT NULL,
    provider_id TEXT, delivery TEXT, last_error TEXT, updated_ms INTEGER NOT NULL,
    UNIQUE (alert_id, step, recipient));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, due_ms);
"""

_ALERT_COLS = ("id, subject, alert_type, severity, state, resident_id, device_id, opened_ms, updated_ms, "
               "lat, lon, detail, step, step_started_ms, escalation, plan_base, presses, burst_start_ms, acknowledged_by, "
               "taken_by, round_started_ms")
_N_ALERT_COLS = len(_ALERT_COLS.split(", "))
SCHEMA_VERSION = 3
# Columns later versions added to `alerts` (2: repeat presses; 3: the operator console), for older databases.
_ADDED_ALERT_COLUMNS = (("plan_base", "INTEGER NOT NULL DEFAULT 0"), ("presses", "INTEGER NOT NULL DEFAULT 1"),
                        ("burst_start_ms", "INTEGER NOT NULL DEFAULT 0"), ("acknowledged_by", "TEXT"),
                        ("taken_by", "TEXT"), ("round_started_ms", "INTEGER NOT NULL DEFAULT 0"))


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older database to this version before the schema script runs.

    Version 1's processed keys were (device_id, seq): they can never match a (device_id, ts, seq) key,
    so that table starts again (its window is a week of redeliveries, not history).
    """
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    columns = {r[1] for r in conn.execute("PRAGMA table_info(alerts)")}
    if columns:
        for name, decl in _ADDED_ALERT_COLUMNS:
            if name not in columns:
                conn.execute(f"ALTER TABLE alerts ADD COLUMN {name} {decl}")
    processed = {r[1] for r in conn.execute("PRAGMA table_info(processed)")}
    if processed and "ts" not in processed:
        conn.execute("DROP TABLE processed")


def _open(path: Path | str, synchronous: str) -> sqlite3.Connection:
    """One SQLite connection in WAL mode, shared between threads (callers serialise it with a lock)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class Database:
    """One connection shared by the ingest, dispatch, tick and web threads, serialised by a lock."""

    def __init__(self, path: Path | str) -> None:
        # FULL: an alert and its outbox rows must survive power loss once observe() returns.
        self.conn = _open(path, "FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        _migrate(self.conn)
        self.conn.executescript(SCHEMA)
        self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing; nested uses join the outer transaction."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _alert(row: tuple[Any, ...]) -> Alert:
    """An alert row with its vocabulary typed again."""
    a = Alert(*row)
    return replace(a, alert_type=AlertType(a.alert_type), severity=Severity(a.severity), state=AlertState(a.state),
                   escalation=Escalation(a.escalation))


class AlertStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def unprocessed(self, keys: Iterable[tuple[str, int, int]]) -> set[tuple[str, int, int]]:
        """Which of these (device_id, ts, seq) keys no committed finding came from."""
        with self.db.transaction() as c:
            return {k for k in keys if c.execute(
                "SELECT 1 FROM processed WHERE device_id=? AND ts=? AND seq=?", k).fetchone() is None}

    def mark_processed(self, keys: Iterable[tuple[str, int, int]], now_ms: int) -> None:
        with self.db.transaction() as c:
            c.executemany("INSERT OR IGNORE INTO processed VALUES (?,?,?,?)", [(*k, now_ms) for k in keys])

    def prune(self, now_ms: int, processed_window_ms: int, audit_window_ms: int) -> dict[str, int]:
        """Forget processed keys past their window, and resolved alerts (with their events and notifications)
        whose last change is older than the audit window; returns rows removed per table."""
        with self.db.transaction() as c:
            removed = {"processed": c.execute("DELETE FROM processed WHERE at_ms < ?",
                                              (now_ms - processed_window_ms,)).rowcount}
            old = "SELECT id FROM alerts WHERE state = ? AND updated_ms < ?"
            args = (AlertState.RESOLVED, now_ms - audit_window_ms)
            removed["alert_events"] = c.execute(f"DELETE FROM alert_events WHERE alert_id IN ({old})", args).rowcount
            removed["outbox"] = c.execute(f"DELETE FROM outbox WHERE alert_id IN ({old})", args).rowcount
            removed["alerts"] = c.execute("DELETE FROM alerts WHERE state = ? AND updated_ms < ?", args).rowcount
        return removed

    def open_alert(self, subject: str, alert_type: str) -> Alert | None:
        with self.db.transaction() as c:
            row = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE subject=? AND alert_type=? AND state != ?",
                            (subject, alert_type, AlertState.RESOLVED)).fetchone()
        return _alert(row) if row else None

    def get(self, alert_id: int) -> Alert | None:
        with self.db.transaction() as c:
            row = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return _alert(row) if row else None

    def insert(self, alert: Alert) -> int:
        with self.db.transaction() as c:
            cur = c.execute(f"INSERT INTO alerts ({_ALERT_COLS}) VALUES ({','.join('?' * _N_ALERT_COLS)})", astuple(alert))
            if cur.lastrowid is None:   # never after a successful INSERT into a rowid table
                raise RuntimeError("the alert insert gave no row id")
            return cur.lastrowid

    def update(self, alert: Alert) -> None:
        cols = _ALERT_COLS.split(", ")[1:]
        with self.db.transaction() as c:
            c.execute(f"UPDATE alerts SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?", (*astuple(alert)[1:], alert.id))

    def add_event(self, ev: AlertEvent) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT INTO alert_events (alert_id, at_ms, kind, actor, detail) VALUES (?,?,?,?,?)", astuple(ev))

    def events(self, alert_id: int) -> list[AlertEvent]:
        with self.db.transaction() as c:
            rows = c.execute("SELECT alert_id, at_ms, kind, actor, detail FROM alert_events WHERE alert_id=? ORDER BY id",
                             (alert_id,)).fetchall()
        return [AlertEvent(*r) for r in rows]

    def running(self) -> list[Alert]:
        with self.db.transaction() as c:
            rows = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE escalation=? AND state=?",
                             (Escalation.RUNNING, AlertState.OPEN)).fetchall()
        return [_alert(r) for r in rows]

    def unresolved(self, limit: int = 5000) -> list[Alert]:
        """Every alert not yet resolved, most urgent grade first, then oldest first: the operators' queue."""
        with self.db.transaction() as c:
            rows = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE state != ? "
                             f"ORDER BY {Severity.sql_urgency('severity')}, opened_ms, id LIMIT ?",
                             (AlertState.RESOLVED, limit)).fetchall()
        return [_alert(r) for r in rows]

    def open_by_severity(self) -> dict[str, int]:
        """How many alerts are not yet resolved, by grade (for monitoring)."""
        with self.db.transaction() as c:
            rows = c.execute("SELECT severity, count(*) FROM alerts WHERE state != ? GROUP BY severity",
                             (AlertState.RESOLVED,)).fetchall()
        return dict(rows)

    def list(self, state: str | None = None, limit: int = 500) -> list[Alert]:
        where, args = ("WHERE state=?", (state,)) if state else ("", ())
        with self.db.transaction() as c:
            rows = c.execute(f"SELECT {_ALERT_COLS} FROM alerts {where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_alert(r) for r in rows]


class DeviceStateStore:
    """What the silence rules need to survive a restart (when each device was last heard, how often it
    reports), in a file of its own.

    Saving thousands of devices every few seconds must never hold the alert database's lock, which an
    SOS needs; and losing the last save to a power cut only makes silence judged from a few seconds
    earlier, so this file is written without an fsync per commit (WAL, synchronous NORMAL).
    """

    def __init__(self, path: Path | str) -> None:
        self.conn = _open(path, "NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS device_state (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
                          " state TEXT NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID")
        self.lock = threading.Lock()

    def save(self, states: Sequence[tuple[str, str, str]], now_ms: int) -> None:
        """(device_id, kind, state as JSON) of devices whose rule state changed since the last save."""
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                self.conn.executemany("INSERT OR REPLACE INTO device_state VALUES (?,?,?,?)", [(*s, now_ms) for s in states])
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def load(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return self.conn.execute("SELECT device_id, kind, state FROM device_state").fetchall()

    def close(self) -> None:
        with self.lock:
            self.conn.close()
