"""Persistence of alerts, their events, the processed (device_id, ts, seq) keys and device rule state,
in SQLite files or in the PostgreSQL database (gateway/db.py)."""
from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import astuple, replace
from typing import Any, NamedTuple

import orjson

from alerts.lifecycle import Alert, AlertEvent
from alerts.vocabulary import AlertState, AlertType, Escalation, Severity
from gateway.db import Connection, Migration, Target, connect, is_postgres, migrate

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
# Reader connections per database at most: the tick, the dispatcher, an SOS starting its call and the console
# read at once without waiting for each other.
_READERS = 4
# Columns later versions added to `alerts` (2: repeat presses; 3: the operator console), for older databases.
_ADDED_ALERT_COLUMNS = (("plan_base", "INTEGER NOT NULL DEFAULT 0"), ("presses", "INTEGER NOT NULL DEFAULT 1"),
                        ("burst_start_ms", "INTEGER NOT NULL DEFAULT 0"), ("acknowledged_by", "TEXT"),
                        ("taken_by", "TEXT"), ("round_started_ms", "INTEGER NOT NULL DEFAULT 0"))


def _to_v3(conn: Connection) -> None:
    """From nothing, or from an older SQLite file (versions 1 and 2), to the schema above.

    Version 1's processed keys were (device_id, seq): they can never match a (device_id, ts, seq) key,
    so that table starts again (its window is a week of redeliveries, not history).
    """
    columns = conn.columns("alerts")
    if columns:
        for name, decl in _ADDED_ALERT_COLUMNS:
            if name not in columns:
                conn.execute(conn.dialect.ddl(f"ALTER TABLE alerts ADD COLUMN {name} {decl}"))
    processed = conn.columns("processed")
    if processed and "ts" not in processed:
        conn.execute("DROP TABLE processed")
    conn.script(SCHEMA)


# Numbered steps, applied in order at start; a later change to the schema is a new step, never an edit.
MIGRATIONS = (Migration(SCHEMA_VERSION, _to_v3),)


class Database:
    """A writer connection, and a few reader connections, to one database.

    The writer is shared by the ingest, dispatch, tick and web threads and serialised by a lock. Reads go
    through `snapshot()`: inside the calling thread's own write transaction they join it and see its
    writes; anywhere else they read the last commit through a reader connection of their own, so a read of
    a thousand alerts neither holds up an SOS's commit nor the read that starts its call, and waits for
    neither (SQLite in WAL mode, and PostgreSQL, let readers and a writer work at once).
    """

    def __init__(self, target: Target, readers: int = _READERS) -> None:
        # Durable: an alert and its outbox rows must survive power loss once observe() returns. On SQLite
        # a commit only writes the log, and `transaction` then waits for the disk outside the lock (`sync`).
        self._log = None if is_postgres(target) or str(target) == ":memory:" else f"{target}-wal"
        self.conn = connect(target, durable=self._log is None)
        migrate(self.conn, "alerts", MIGRATIONS)
        self.target = target
        self.lock = threading.RLock()
        self._committed = self._synced = 0   # commits so far, and how many of them are known to be on disk
        self._depth = 0
        self._writing: int | None = None   # the thread inside a write transaction
        # ":memory:" is a database of its own per connection: there every read goes to the writer.
        self._max_readers = 0 if str(target) == ":memory:" else readers
        self._readers: list[Connection] = []              # every reader opened so far
        self._idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._opening = threading.Lock()
        self._reading = threading.local()                  # .conn: the reader this thread's snapshot holds

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Connection]:
        """All or nothing; nested uses join the outer transaction, whose `durable` counts.

        Durable: on disk when this returns. Not durable: survives a crash of the process, and the next
        `sync` or durable transaction of any thread puts it on disk (a log written in order makes a later
        commit durable only with every earlier one), so a batch of them costs the disk one wait."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.begin()
            self._depth, self._writing = 1, threading.get_ident()
            try:
                yield self.conn
            except BaseException:
                self.conn.rollback()
                raise
            else:
                self.conn.commit()
                self._committed += 1
            finally:
                self._depth, self._writing = 0, None
        if durable:
            self.sync()

    def sync(self) -> None:
        """Every commit so far is on disk once this returns.

        SQLite (synchronous NORMAL in WAL mode) writes a commit to the write-ahead log and leaves it to the
        page cache; this is the fsync FULL would have made inside the commit, made after the writer's lock
        is released: the other threads' transactions go on meanwhile, and waits that overlap share one
        flush. (A checkpoint syncs the log before copying it, and the database before the log starts
        over.) With nothing committed since the last sync there is nothing to wait for; nor on PostgreSQL,
        which commits synchronously."""
        committed = self._committed
        if self._log is None or self._synced >= committed:
            return
        fd = os.open(self._log, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._synced = max(self._synced, committed)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """Reads only: the committed state, without the writer's lock; in this thread's write transaction,
        that transaction. A snapshot inside a snapshot shares its read transaction (one view of the data)."""
        held: Connection | None = getattr(self._reading, "conn", None)
        if self._writing == threading.get_ident() or not self._max_readers:
            with self.transaction() as c:
                yield c
            return
        if held is not None:
            yield held
            return
        reader = self._take_reader()
        try:
            reader.begin(read_only=True)
        except BaseException:
            self._idle.put(reader)   # a PostgreSQL reader that lost its server connects again on next use
            raise
        self._reading.conn = reader
        try:
            yield reader
        finally:
            self._reading.conn = None
            try:
                reader.rollback()   # nothing to keep: it only read
            finally:
                self._idle.put(reader)

    def _take_reader(self) -> Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._opening:
            if len(self._readers) < self._max_readers:
                reader = connect(self.target)
                self._readers.append(reader)
                return reader
        return self._idle.get()   # all busy: the first one back

    def close(self) -> None:
        with self._opening:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
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
        keys = set(keys)
        with self.db.snapshot() as c:
            return keys - c.matching_keys("processed", list(keys))

    def mark_processed(self, keys: Iterable[tuple[str, int, int]], now_ms: int) -> None:
        with self.db.transaction() as c:
            c.executemany("INSERT INTO processed (device_id, ts, seq, at_ms) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                          [(*k, now_ms) for k in keys])

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
        with self.db.snapshot() as c:
            row = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE subject=? AND alert_type=? AND state != ?",
                            (subject, alert_type, AlertState.RESOLVED)).fetchone()
        return _alert(row) if row else None

    def get(self, alert_id: int) -> Alert | None:
        with self.db.snapshot() as c:
            row = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return _alert(row) if row else None

    def insert(self, alert: Alert) -> int:
        """Store a new alert; its id is the database's (`alert.id` is ignored)."""
        with self.db.transaction() as c:
            alert_id: int = c.execute(f"INSERT INTO alerts ({_ALERT_COLS.removeprefix('id, ')})"
                                      f" VALUES ({','.join('?' * (_N_ALERT_COLS - 1))}) RETURNING id",
                                      astuple(alert)[1:]).fetchone()[0]
            return alert_id

    def update(self, alert: Alert) -> None:
        cols = _ALERT_COLS.split(", ")[1:]
        with self.db.transaction() as c:
            c.execute(f"UPDATE alerts SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?", (*astuple(alert)[1:], alert.id))

    def add_event(self, ev: AlertEvent) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT INTO alert_events (alert_id, at_ms, kind, actor, detail) VALUES (?,?,?,?,?)", astuple(ev))

    def events(self, alert_id: int) -> list[AlertEvent]:
        with self.db.snapshot() as c:
            rows = c.execute("SELECT alert_id, at_ms, kind, actor, detail FROM alert_events WHERE alert_id=? ORDER BY id",
                             (alert_id,)).fetchall()
        return [AlertEvent(*r) for r in rows]

    def running(self) -> list[Alert]:
        with self.db.snapshot() as c:
            rows = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE escalation=? AND state=?",
                             (Escalation.RUNNING, AlertState.OPEN)).fetchall()
        return [_alert(r) for r in rows]

    def unresolved(self, limit: int = 5000) -> list[Alert]:
        """Every alert not yet resolved, most urgent grade first, then oldest first: the operators' queue."""
        with self.db.snapshot() as c:
            rows = c.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE state != ? "
                             f"ORDER BY {Severity.sql_urgency('severity')}, opened_ms, id LIMIT ?",
                             (AlertState.RESOLVED, limit)).fetchall()
        return [_alert(r) for r in rows]

    def open_by_severity(self) -> dict[str, int]:
        """How many alerts are not yet resolved, by grade (for monitoring)."""
        with self.db.snapshot() as c:
            rows = c.execute("SELECT severity, count(*) FROM alerts WHERE state != ? GROUP BY severity",
                             (AlertState.RESOLVED,)).fetchall()
        return dict(rows)

    def list(self, state: str | None = None, limit: int = 500) -> list[Alert]:
        where, args = ("WHERE state=?", (state,)) if state else ("", ())
        with self.db.snapshot() as c:
            rows = c.execute(f"SELECT {_ALERT_COLS} FROM alerts {where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_alert(r) for r in rows]


_DEVICE_STATE_MIGRATIONS = (
    Migration(1, lambda c: c.script(
        "CREATE TABLE IF NOT EXISTS device_state (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
        " state TEXT NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID")),
    # A state is saved as a JSON array of its values, a third of the object's size and encoded three times
    # as fast; its layout names the fields, so a state saved by an older version is still read by name.
    Migration(2, lambda c: c.script(
        "ALTER TABLE device_state ADD COLUMN layout TEXT;\n"
        "CREATE TABLE IF NOT EXISTS device_state_layout (layout TEXT PRIMARY KEY, fields TEXT NOT NULL)")),
)


def layout_id(fields: Sequence[str]) -> str:
    """A short name for a list of fields, the same in every process and version that has them."""
    return hashlib.sha1(",".join(fields).encode()).hexdigest()[:12]


class SavedState(NamedTuple):
    device_id: str
    kind: str
    state: str                        # JSON: an array of values in `fields`' order, or (saved before) an object
    fields: tuple[str, ...] | None    # None for an object


class DeviceStateStore:
    """What the silence rules need to survive a restart (when each device was last heard, how often it
    reports), in a file of its own (or its own table and connection in PostgreSQL).

    Saving thousands of devices every few seconds must never hold the alert database's lock, which an
    SOS needs; and losing the last save to a power cut only makes silence judged from a few seconds
    earlier, so it is written without an fsync per commit (SQLite synchronous NORMAL, PostgreSQL
    synchronous_commit off).
    """

    def __init__(self, target: Target) -> None:
        self.conn = connect(target, durable=False)
        migrate(self.conn, "device_state", _DEVICE_STATE_MIGRATIONS)
        self.lock = threading.Lock()

    def save(self, states: Iterable[tuple[str, str, str]], layouts: Mapping[str, Sequence[str]], now_ms: int) -> None:
        """(device_id, kind, values as a JSON array) of devices whose rule state changed since the last save;
        `layouts` names each kind's fields.

        Written in device order: 50,000 states among a million took 1.6 s in the order they came and
        0.4 s sorted, as each page of the table is then changed once rather than once per state on it."""
        ids = {kind: layout_id(fields) for kind, fields in layouts.items()}
        with self.lock, self.conn.transaction() as c:
            c.executemany("INSERT INTO device_state_layout (layout, fields) VALUES (?, ?) ON CONFLICT DO NOTHING",
                          [(ids[kind], orjson.dumps(list(fields)).decode()) for kind, fields in layouts.items()])
            c.executemany("INSERT INTO device_state (device_id, kind, state, layout, updated_ms) VALUES (?,?,?,?,?)"
                          " ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, state = excluded.state,"
                          " layout = excluded.layout, updated_ms = excluded.updated_ms",
                          sorted((device_id, kind, state, ids[kind], now_ms) for device_id, kind, state in states))

    def load(self) -> Iterator[SavedState]:
        """Every saved state, read as it is used: at a million devices the whole list at once held a few
        hundred MiB that the process kept after the restore."""
        with self.lock:
            layouts = {layout: tuple(orjson.loads(fields))
                       for layout, fields in self.conn.execute("SELECT layout, fields FROM device_state_layout")}
            for device_id, kind, state, layout in self.conn.execute(
                    "SELECT device_id, kind, state, layout FROM device_state"):
                yield SavedState(device_id, kind, state, None if layout is None else layouts[layout])

    def close(self) -> None:
        with self.lock:
            self.conn.close()
