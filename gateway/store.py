"""Operational store: device registry, last state, recent track, dedup keys, dead letters.

A SQLite file (WAL) by default, or PostgreSQL (`[store] url`), through gateway/db.py.
One connection per thread; each ingest batch is one transaction.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from gateway import exercise_store
from gateway.db import Connection, Migration, Target, connect, migrate
from gateway.exercise_store import ExerciseSession, SessionNews
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
SCHEMA_VERSION = 4

# Tables whose version-1 layout cannot be altered in place. `seen` held (device_id, seq) keys, which
# can never match a (device_id, ts, seq) key, and `track` had no receive time to prune by; both are
# windows of recent data, so they start again empty rather than with rows of the wrong shape.
_V1_TABLES = ("seen", "track")


def _to_v2(db: Connection) -> None:
    """From nothing, or from version 1 (SQLite files only), to the schema above."""
    for table in _V1_TABLES:
        columns = db.columns(table)
        if columns and not {"ts", "received_ms"} <= columns:
            db.execute(f"DROP TABLE {table}")
    db.script(SCHEMA)


def _to_v3(db: Connection) -> None:
    """Exercise sessions (gateway/exercise_store.py)."""
    db.script(exercise_store.SCHEMA)


# Dedup keys ordered by device time first. Keyed by device first, each batch's keys landed on as many
# B-tree pages as it had devices (a page written to the log for every key or two) and a second B-tree
# kept them by age; by time first they land at the end of one B-tree, which also serves the prune.
# Committing a batch took 26 µs a message of CPU before, 15 after (BENCHMARKS.md, eleventh round).
_SEEN_BY_TIME = """
CREATE TABLE seen_by_time (
    ts INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (ts, device_id, seq)
) WITHOUT ROWID;
INSERT INTO seen_by_time (ts, device_id, seq, received_ms) SELECT ts, device_id, seq, received_ms FROM seen ORDER BY ts;
DROP TABLE seen;
ALTER TABLE seen_by_time RENAME TO seen;
"""


def _to_v4(db: Connection) -> None:
    """`seen` keyed (ts, device_id, seq), its keys kept; its age index goes with the old table."""
    db.script(_SEEN_BY_TIME)


# Numbered steps, applied in order at start; a later change to the schema is a new step, never an edit.
MIGRATIONS = (Migration(2, _to_v2), Migration(3, _to_v3), Migration(4, _to_v4))

# Each aspect of the last state moves only forward in device time, so a
# late or redelivered message never overwrites a newer reading.
_UPSERT_STATE = """
INSERT INTO last_state AS s (device_id, last_seen_ms, lat, lon, accuracy_m, position_ts,
                        battery, charging, worn, steps, status_ts, heart_rate, spo2, health_ts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET
    last_seen_ms = {newer_seen},
    lat = CASE WHEN {newer_position} THEN excluded.lat ELSE s.lat END,
    lon = CASE WHEN {newer_position} THEN excluded.lon ELSE s.lon END,
    accuracy_m = CASE WHEN {newer_position} THEN excluded.accuracy_m ELSE s.accuracy_m END,
    position_ts = CASE WHEN {newer_position} THEN excluded.position_ts ELSE s.position_ts END,
    battery = CASE WHEN {newer_status} THEN excluded.battery ELSE s.battery END,
    charging = CASE WHEN {newer_status} THEN excluded.charging ELSE s.charging END,
    worn = CASE WHEN {newer_status} THEN excluded.worn ELSE s.worn END,
    steps = CASE WHEN {newer_status} THEN excluded.steps ELSE s.steps END,
    status_ts = CASE WHEN {newer_status} THEN excluded.status_ts ELSE s.status_ts END,
    heart_rate = CASE WHEN {newer_health} THEN coalesce(excluded.heart_rate, s.heart_rate) ELSE s.heart_rate END,
    spo2 = CASE WHEN {newer_health} THEN coalesce(excluded.spo2, s.spo2) ELSE s.spo2 END,
    health_ts = CASE WHEN {newer_health} THEN excluded.health_ts ELSE s.health_ts END
""".format(
    # A missing reading (NULL ts) is never newer; the row's own NULL counts as older than any reading.
    newer_seen="CASE WHEN excluded.last_seen_ms > s.last_seen_ms THEN excluded.last_seen_ms ELSE s.last_seen_ms END",
    newer_position="excluded.position_ts > coalesce(s.position_ts, -1)",
    newer_status="excluded.status_ts > coalesce(s.status_ts, -1)",
    newer_health="excluded.health_ts > coalesce(s.health_ts, -1)",
)

_REGISTER = (
    "INSERT INTO devices (device_id, kind, label, registered_ms, auto_registered) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, label = coalesce(excluded.label, devices.label)"
)

# A redelivered position replaces the one with the same device time.
_INSERT_TRACK = """
INSERT INTO track (device_id, ts, lat, lon, accuracy_m, source, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, ts) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, accuracy_m = excluded.accuracy_m,
    source = excluded.source, received_ms = excluded.received_ms
"""

# Column order of _UPSERT_STATE's VALUES.
_STATE_KEYS = ("device_id", "last_seen_ms", "lat", "lon", "accuracy_m", "position_ts", "battery", "charging",
               "worn", "steps", "status_ts", "heart_rate", "spo2", "health_ts")

# One last_state row by column name; values are str, int, float or None on either backend.
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


@dataclass(frozen=True, slots=True)
class BatchRows:
    """What one ingest batch writes, as plain rows: what `OperationalStore.commit_rows` commits, and cheap to
    send to another process (pickled and loaded again: 1.1 µs a message, against 13.6 µs for the messages)."""

    received_ms: int
    seen: list[tuple[int, str, int, int]]   # (ts, device_id, seq, received_ms): the table's key order
    states: list[tuple[Any, ...]]
    track: list[tuple[Any, ...]]
    exercise: list[DeviceMessage]   # the equipment's messages, folded into their sessions in the transaction
    dead: list[tuple[int, str, str, str, bytes, int]]


def batch_rows(accepted: Sequence[DeviceMessage], dead: Sequence[DeadLetter], received_ms: int) -> BatchRows:
    """The rows of a batch (pure). They go in key order: on PostgreSQL the two lanes' transactions lock rows,
    and two batches touching the same devices in opposite orders would deadlock (SQLite takes one lock for all)."""
    states = state_updates(accepted, received_ms)
    return BatchRows(
        received_ms,
        # In the table's key order: appended at the end of its B-tree, in order.
        sorted((ts, device_id, seq, received_ms) for device_id, ts, seq in (m.key for m in accepted)),
        [tuple(states[device].values()) for device in sorted(states)],
        # A stable sort: of two positions with the same device time, the later in the batch still wins.
        sorted(((m.device_id, m.payload.ts, m.payload.lat, m.payload.lon, m.payload.accuracy_m, m.payload.source,
                 received_ms) for m in accepted if isinstance(m.payload, Location)),
               key=lambda row: (row[0], row[1])),
        [m for m in accepted if m.kind is DeviceKind.EQUIPMENT],
        [(d.received_ms, d.topic, d.reason, d.detail, d.payload, d.payload_size) for d in dead],
    )


class OperationalStore:
    """The gateway's database (a SQLite file or a PostgreSQL URL). Safe to share between threads: each
    gets its own connection."""

    def __init__(self, target: Target, claim_ttl_s: float = 600) -> None:
        self.target = target
        self.claim_ttl_ms = int(claim_ttl_s * 1000)
        self._local = threading.local()
        # Run first inside every ingest transaction; raises when this process may no longer commit
        # (an active gateway that lost its lock: gateway/active.py).
        self.fence: Callable[[Connection], None] | None = None
        db = self._connect()
        try:
            migrate(db, "gateway", MIGRATIONS)
        finally:
            db.close()

    def _connect(self) -> Connection:
        # Not durable: survives a process crash (kill -9) without losing a committed
        # transaction; only a power cut (or the database server's crash) can take the last ones.
        return connect(self.target, durable=False)

    @property
    def db(self) -> Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def checkpoint_after(self, pages: int) -> None:
        """Commits made by this thread copy the write-ahead log back into the database file once it holds
        `pages` pages; 0: never, another thread's commits do it (SQLite; PostgreSQL checkpoints itself)."""
        self.db.dialect.checkpoint_after(self.db, pages)

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
        self.db.execute(_REGISTER, (device_id, DeviceKind(kind).value, label, now_ms, int(auto)))

    def register_devices(self, device_ids: Iterable[str], kind: DeviceKind, now_ms: int) -> None:
        """Many devices of one kind at once, in one transaction (a fleet's import; a benchmark's million)."""
        value = DeviceKind(kind).value
        with self.db.transaction() as db:
            db.executemany(_REGISTER, ((d, value, None, now_ms, 0) for d in device_ids))

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
        return self.db.matching_keys("seen", keys)

    def commit_batch(self, accepted: Sequence[DeviceMessage], dead: Sequence[DeadLetter],
                     received_ms: int) -> list[SessionNews]:
        """Record one batch in one transaction: dedup keys, last state, track, exercise sessions, dead letters.
        Returns the exercise sessions that opened or closed, for the machines' displays."""
        return self.commit_rows(batch_rows(accepted, dead, received_ms))

    def commit_rows(self, rows: BatchRows) -> list[SessionNews]:
        """`commit_batch` for rows already made: what the store process (gateway/store_process.py) is sent."""
        with self.db.transaction() as db:
            if self.fence is not None:
                self.fence(db)
            db.executemany(
                "INSERT INTO seen (ts, device_id, seq, received_ms) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", rows.seen)
            db.executemany(_UPSERT_STATE, rows.states)
            db.executemany(_INSERT_TRACK, rows.track)
            news = exercise_store.record_sessions(db, rows.exercise, rows.received_ms, self.claim_ttl_ms)
            db.executemany(
                "INSERT INTO dead_letter (received_ms, topic, reason, detail, payload, payload_size)"
                " VALUES (?, ?, ?, ?, ?, ?)", rows.dead,
            )
        return news

    # -- exercise sessions -------------------------------------------------------

    def close_idle_sessions(self, now_ms: int, idle_ms: int) -> list[SessionNews]:
        return exercise_store.close_idle(self.db, now_ms, idle_ms, self.claim_ttl_ms)

    def exercise_session(self, device_id: str, session_id: str) -> ExerciseSession | None:
        return exercise_store.session(self.db, device_id, session_id)

    def session_by_code(self, code: str) -> ExerciseSession | None:
        return exercise_store.session_by_code(self.db, code)

    def claim_session(self, code: str, resident_id: str, now_ms: int) -> bool:
        return exercise_store.claim(self.db, code, resident_id, now_ms)

    def sessions_of(self, resident_id: str, since_ts: int = 0) -> list[ExerciseSession]:
        return exercise_store.sessions_of(self.db, resident_id, since_ts)

    def sessions_between(self, since_ts: int, until_ts: int) -> list[ExerciseSession]:
        return exercise_store.sessions_between(self.db, since_ts, until_ts)

    def last_session_starts(self) -> dict[str, int]:
        return exercise_store.last_session_starts(self.db)

    def prune(self, now_ms: int, track_window_ms: int, dedup_window_ms: int, dead_letter_window_ms: int) -> dict[str, int]:
        """Forget positions, dedup keys and dead letters older than their windows; returns rows removed per table.

        Every window goes by the gateway's receive time: a device whose clock is wrong can
        neither keep its rows for ever (a ts in 2090) nor have them dropped at once (a ts in 2015).
        Dedup keys are found by their device time, which their table is ordered by, and go once
        their receive time has left the window too: a key from a clock behind stays its full
        window, one from a clock ahead (ingest refuses more than `max_clock_skew_s`) at most
        that much longer.
        """
        removed = {}
        with self.db.transaction():
            for table, window_ms in (("track", track_window_ms), ("dead_letter", dead_letter_window_ms)):
                removed[table] = self.db.execute(f"DELETE FROM {table} WHERE received_ms < ?",
                                                 (now_ms - window_ms,)).rowcount
            cutoff = now_ms - dedup_window_ms
            removed["seen"] = self.db.execute("DELETE FROM seen WHERE ts < ? AND received_ms < ?",
                                              (cutoff, cutoff)).rowcount
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
