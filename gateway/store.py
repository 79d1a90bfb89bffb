"""Operational store (SQLite, WAL): device registry, last state, recent track, dedup keys, dead letters.

One connection per thread; each ingest batch is one transaction.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import orjson

from gateway.models import DeviceKind, DeviceMessage, Health, Location, WatchStatus, _OptionalPosition

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    label TEXT,
    registered_ms INTEGER NOT NULL,
    auto_registered INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_state (
    device_id TEXT PRIMARY KEY,
    last_seen_ms INTEGER NOT NULL,
    lat REAL, lon REAL, accuracy_m REAL, position_ts INTEGER,
    battery INTEGER, charging INTEGER, worn INTEGER, steps INTEGER, status_ts INTEGER,
    heart_rate INTEGER, spo2 INTEGER, health_ts INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS track (
    device_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    lat REAL NOT NULL, lon REAL NOT NULL, accuracy_m REAL, source TEXT,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS track_by_age ON track (received_ms);
-- A redelivery repeats the device's ts and seq exactly; a watch that rebooted counts seq from 1
-- again with a newer ts, so (device_id, ts, seq) tells them apart where (device_id, seq) did not.
CREATE TABLE IF NOT EXISTS seen (
    device_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, ts, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_age ON seen (received_ms);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_by_reason ON dead_letter (reason);
CREATE INDEX IF NOT EXISTS dead_letter_by_age ON dead_letter (received_ms);
"""
SCHEMA_VERSION = 2

# Tables whose version-1 layout cannot be altered in place. `seen` held (device_id, seq) keys, which
# can never match a (device_id, ts, seq) key, and `track` had no receive time to prune by; both are
# windows of recent data, so they start again empty rather than with rows of the wrong shape.
_V1_TABLES = ("seen", "track")

# Each aspect of the last state moves only forward in device time, so a
# late or redelivered message never overwrites a newer reading.
_UPSERT_STATE = """
INSERT INTO last_state (device_id, last_seen_ms, lat, lon, accuracy_m, position_ts,
                        battery, charging, worn, steps, status_ts, heart_rate, spo2, health_ts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET
    last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
    lat = iif(excluded.position_ts > coalesce(position_ts, -1), excluded.lat, lat),
    lon = iif(excluded.position_ts > coalesce(position_ts, -1), excluded.lon, lon),
    accuracy_m = iif(excluded.position_ts > coalesce(position_ts, -1), excluded.accuracy_m, accuracy_m),
    position_ts = nullif(max(coalesce(position_ts, -1), coalesce(excluded.position_ts, -1)), -1),
    battery = iif(excluded.status_ts > coalesce(status_ts, -1), excluded.battery, battery),
    charging = iif(excluded.status_ts > coalesce(status_ts, -1), excluded.charging, charging),
    worn = iif(excluded.status_ts > coalesce(status_ts, -1), excluded.worn, worn),
    steps = iif(excluded.status_ts > coalesce(status_ts, -1), excluded.steps, steps),
    status_ts = nullif(max(coalesce(status_ts, -1), coalesce(excluded.status_ts, -1)), -1),
    heart_rate = iif(excluded.health_ts > coalesce(health_ts, -1), coalesce(excluded.heart_rate, heart_rate), heart_rate),
    spo2 = iif(excluded.health_ts > coalesce(health_ts, -1), coalesce(excluded.spo2, spo2), spo2),
    health_ts = nullif(max(coalesce(health_ts, -1), coalesce(excluded.health_ts, -1)), -1)
"""

# Column order of _UPSERT_STATE's VALUES.
_STATE_KEYS = ("device_id", "last_seen_ms", "lat", "lon", "accuracy_m", "position_ts", "battery", "charging",
               "worn", "steps", "status_ts", "heart_rate", "spo2", "health_ts")

# One last_state row by column name; values are SQLite's (str, int, float or None).
StateRow: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    kind: DeviceKind
    label: str | None
    registered_ms: int


def state_updates(messages: Iterable[DeviceMessage], received_ms: int) -> dict[str, StateRow]:
    """The newest reading of each aspect per device in a batch (pure)."""
    out: dict[str, StateRow] = {}
    for m in messages:
        row = out.get(m.device_id)
        if row is None:
            row = out[m.device_id] = dict.fromkeys(_STATE_KEYS)
            row["device_id"] = m.device_id
            row["last_seen_ms"] = received_ms
        p = m.payload
        if isinstance(p, (Location, _OptionalPosition)) and p.lat is not None and p.ts > (row["position_ts"] or -1):
            row.update(lat=p.lat, lon=p.lon, accuracy_m=p.accuracy_m, position_ts=p.ts)
        elif isinstance(p, WatchStatus) and p.ts > (row["status_ts"] or -1):
            row.update(battery=p.battery, charging=int(p.charging), worn=int(p.worn), steps=p.steps, status_ts=p.ts)
        elif isinstance(p, Health) and p.ts > (row["health_ts"] or -1):
            # A reading may carry only one of the two; the other keeps its last value, as the upsert does across batches.
            row.update(heart_rate=p.heart_rate if p.heart_rate is not None else row["heart_rate"],
                       spo2=p.spo2 if p.spo2 is not None else row["spo2"], health_ts=p.ts)
    return out


class OperationalStore:
    """The gateway's SQLite file. Safe to share between threads: each gets its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = self._connect()
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for table in _V1_TABLES:
                    columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                    if columns and not {"ts", "received_ms"} <= columns:
                        db.execute(f"DROP TABLE {table}")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a process crash (kill -9) without losing a
        # committed transaction; only a power cut can take the last ones.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def ping(self) -> bool:
        """Whether the store answers (for readiness and monitoring)."""
        try:
            self.db.execute("SELECT 1").fetchone()
        except Exception:
            return False
        return True

    # -- device registry -------------------------------------------------

    def register_device(self, device_id: str, kind: DeviceKind, now_ms: int, label: str | None = None,
                        auto: bool = False) -> None:
        self.db.execute(
            "INSERT INTO devices (device_id, kind, label, registered_ms, auto_registered) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, label = coalesce(excluded.label, label)",
            (device_id, DeviceKind(kind).value, label, now_ms, int(auto)),
        )

    def device(self, device_id: str) -> Device | None:
        row = self.db.execute(
            "SELECT device_id, kind, label, registered_ms FROM devices WHERE device_id = ?", (device_id,)
        ).fetchone()
        return Device(row[0], DeviceKind(row[1]), row[2], row[3]) if row else None

    def device_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT device_id FROM devices")}

    def registered_devices(self) -> list[tuple[str, str]]:
        """(device_id, kind) of every registered device."""
        return self.db.execute("SELECT device_id, kind FROM devices").fetchall()

    # -- ingest ------------------------------------------------------------

    def already_seen(self, keys: Sequence[tuple[str, int, int]]) -> set[tuple[str, int, int]]:
        """Which of these (device_id, ts, seq) keys were committed before."""
        # A join against json_each walks the keys and probes the primary key
        # for each; SQLite plans a row-value IN (VALUES ...) as a table scan.
        return set(self.db.execute(
            "SELECT s.device_id, s.ts, s.seq FROM json_each(?) AS k JOIN seen AS s"
            " ON s.device_id = json_extract(k.value, '$[0]') AND s.ts = json_extract(k.value, '$[1]')"
            " AND s.seq = json_extract(k.value, '$[2]')",
            (orjson.dumps(keys),),
        ))

    def commit_batch(self, accepted: Sequence[DeviceMessage], dead: Sequence[DeadLetter], received_ms: int) -> None:
        """Record one batch in one transaction: dedup keys, last state, track, dead letters."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if accepted:
                db.executemany(
                    "INSERT OR IGNORE INTO seen (device_id, ts, seq, received_ms) VALUES (?, ?, ?, ?)",
                    [(*m.key, received_ms) for m in accepted],
                )
                db.executemany(_UPSERT_STATE, [tuple(row.values()) for row in state_updates(accepted, received_ms).values()])
                track = [
                    (m.device_id, m.payload.ts, m.payload.lat, m.payload.lon, m.payload.accuracy_m, m.payload.source,
                     received_ms)
                    for m in accepted if isinstance(m.payload, Location)
                ]
                if track:
                    db.executemany("INSERT OR REPLACE INTO track VALUES (?, ?, ?, ?, ?, ?, ?)", track)
            if dead:
                db.executemany(
                    "INSERT INTO dead_letter (received_ms, topic, reason, detail, payload, payload_size)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(d.received_ms, d.topic, d.reason, d.detail, d.payload, d.payload_size) for d in dead],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def prune(self, now_ms: int, track_window_ms: int, dedup_window_ms: int, dead_letter_window_ms: int) -> dict[str, int]:
        """Forget positions, dedup keys and dead letters older than their windows; returns rows removed per table.

        Every window goes by the gateway's receive time: a device whose clock is wrong can
        neither keep its rows for ever (a ts in 2090) nor have them dropped at once (a ts in 2015).
        """
        removed = {}
        with self.db:
            for table, window_ms in (("track", track_window_ms), ("seen", dedup_window_ms),
                                     ("dead_letter", dead_letter_window_ms)):
                removed[table] = self.db.execute(f"DELETE FROM {table} WHERE received_ms < ?",
                                                 (now_ms - window_ms,)).rowcount
        return removed

    # -- reading (dashboard, tests, CLI) -------------------------------------

    def last_state(self, device_id: str) -> StateRow | None:
        cur = self.db.execute("SELECT * FROM last_state WHERE device_id = ?", (device_id,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    def track(self, device_id: str, since_ms: int = 0, until_ms: int | None = None) -> list[tuple[int, float, float]]:
        """(ts, lat, lon) of the device's positions from `since_ms` to `until_ms` (device time), oldest first."""
        return self.db.execute(
            "SELECT ts, lat, lon FROM track WHERE device_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
            (device_id, since_ms, 2**63 - 1 if until_ms is None else until_ms),
        ).fetchall()

    def fleet(self) -> list[StateRow]:
        """Every registered device with its kind, label and last state (None where never heard), by id."""
        cur = self.db.execute("SELECT d.device_id, d.kind, d.label, s.last_seen_ms, s.lat, s.lon, s.position_ts, s.battery,"
                              " s.charging, s.worn, s.heart_rate FROM devices d LEFT JOIN last_state s USING (device_id)"
                              " ORDER BY d.device_id")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def dead_letters(self, reason: str | None = None) -> list[DeadLetter]:
        sql = "SELECT received_ms, topic, reason, detail, payload, payload_size FROM dead_letter"
        rows = self.db.execute(sql + " WHERE reason = ? ORDER BY id" if reason else sql + " ORDER BY id",
                               (reason,) if reason else ())
        return [DeadLetter(*r) for r in rows]

    def dead_letter_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT reason, count(*) FROM dead_letter GROUP BY reason"))

    def seen_count(self) -> int:
        count: int = self.db.execute("SELECT count(*) FROM seen").fetchone()[0]
        return count
