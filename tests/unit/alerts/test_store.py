"""The alert store: the operators' queue order, one transaction for an alert and its outbox rows, and
databases made by earlier versions (or by this one, started again)."""
from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from alerts.lifecycle import open_alert
from alerts.outbox import Outbox
from alerts.rules import Finding
from alerts.store import SCHEMA_VERSION, AlertStore, Database, DeviceStateStore, SavedState
from alerts.vocabulary import AlertState, AlertType, Channel, Severity
from tests.fixtures.postgres import database
from tests.unit.alert_support import DAY, DUTY

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


def test_the_queue_is_unresolved_alerts_red_first_then_oldest(tmp_path, store_backend):
    db = Database(database(tmp_path, "alerts.db"))
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


def count(db: Database, table: str) -> int:
    """Rows committed in `table`, read outside any transaction of `db`'s stores."""
    n: int = db.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return n


def raise_and_queue(db: Database, fail: bool) -> None:
    """A new alert and its first call in one transaction, which fails after both writes if `fail`."""
    with db.transaction():
        alert_id = insert(AlertStore(db), AlertType.SOS, Severity.RED, "r-1", DAY)
        Outbox(db).add(alert_id, "0", DUTY["service_centre"], Channel.VOICE, "zh", "SOS", DAY)
        if fail:
            raise RuntimeError("the process stops before the commit")


def test_an_alert_and_its_outbox_row_roll_back_together(tmp_path, store_backend):
    db = Database(database(tmp_path, "alerts.db"))
    with pytest.raises(RuntimeError, match="before the commit"):
        raise_and_queue(db, fail=True)
    assert (count(db, "alerts"), count(db, "outbox")) == (0, 0)
    db.close()


def test_an_alert_and_its_outbox_row_commit_together_and_neither_is_seen_before(tmp_path, store_backend):
    db = Database(database(tmp_path, "alerts.db"))
    reader = Database(database(tmp_path, "alerts.db"))   # another connection, as a second process would have
    with db.transaction():
        raise_and_queue(db, fail=False)
        assert (count(reader, "alerts"), count(reader, "outbox")) == (0, 0)
    assert (count(reader, "alerts"), count(reader, "outbox")) == (1, 1)
    reader.close()
    db.close()


def test_on_sqlite_a_commit_only_writes_the_log_and_a_durable_one_waits_for_the_disk_outside_the_lock(
        tmp_path, monkeypatch):
    db = Database(tmp_path / "alerts.db")
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1   # NORMAL: the commit does not fsync
    flushed: list[tuple[str, str]] = []
    others_went_on: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread() is threading.main_thread() and not others_went_on:
            # While this thread waits for the disk, another thread's transaction runs to its commit (and its
            # own wait for the disk).
            other = threading.Thread(target=raise_and_queue, args=(db, False), name="other")
            other.start()
            other.join(timeout=10)
            others_went_on.append(not other.is_alive())
        flushed.append((threading.current_thread().name, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with db.transaction() as c:
        c.execute("INSERT INTO processed (device_id, ts, seq, at_ms) VALUES ('w1', 1, 1, 0)")
    log = str(tmp_path / "alerts.db-wal")
    assert others_went_on == [True] and flushed == [("other", log), ("MainThread", log)]
    assert count(db, "alerts") == 1

    with db.transaction(durable=False) as c, db.transaction():   # nested: the outermost transaction decides
        c.execute("INSERT INTO processed (device_id, ts, seq, at_ms) VALUES ('w1', 2, 2, 0)")
    assert len(flushed) == 2 and count(db, "processed") == 2
    db.sync()                    # ... and whoever syncs next puts it on disk
    assert flushed[2:] == [("MainThread", log)]
    db.sync()                    # nothing committed since: nothing to wait for
    assert len(flushed) == 3
    db.close()


def test_on_postgresql_every_commit_is_synchronous_and_there_is_nothing_left_to_sync(postgres_url, monkeypatch):
    db = Database(postgres_url)
    assert db.conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("PostgreSQL's commit already waited for its disk"))
    with db.transaction() as c:
        c.execute("INSERT INTO processed (device_id, ts, seq, at_ms) VALUES ('w1', 1, 1, 0)")
    db.sync()
    assert count(db, "processed") == 1
    db.close()


@contextmanager
def paused_in_another_thread(body: Callable[[Callable[[], None]], None]) -> Iterator[None]:
    """Runs `body(pause)` in a thread of its own; the with-block runs while that thread is inside `pause()`."""
    holding, release = threading.Event(), threading.Event()

    def pause() -> None:
        holding.set()
        release.wait(30)

    thread = threading.Thread(target=body, args=(pause,))
    thread.start()
    try:
        assert holding.wait(30)
        yield
    finally:
        release.set()
        thread.join(30)


def test_a_read_neither_waits_for_another_threads_write_transaction_nor_sees_it_before_it_commits(tmp_path, store_backend):
    # The tick's read of every running alert used to take the writer's lock: an SOS's commit waited for it.
    db = Database(database(tmp_path, "alerts.db"))
    store = AlertStore(db)
    first = insert(store, AlertType.SOS, Severity.RED, "r-1", DAY)
    seen: dict[str, object] = {}

    def write(pause: Callable[[], None]) -> None:
        with db.transaction():
            seen["new"] = new = insert(store, AlertType.FALL, Severity.RED, "r-2", DAY + 1)
            seen["own write, inside"] = store.get(new) is not None
            pause()
        seen["committed"] = True

    with paused_in_another_thread(write):
        during = [a.id for a in store.unresolved()]
        running = [a.id for a in store.running()]
        assert "committed" not in seen   # the reads came back while the write transaction was still open
    assert seen["own write, inside"] is True
    assert during == running == [first]
    assert sorted(a.id for a in store.unresolved()) == sorted([first, seen["new"]])   # type: ignore[type-var]
    db.close()


def test_a_long_read_holds_up_no_other_read_and_nested_reads_share_one_view(tmp_path, store_backend):
    # The tick reads every running alert; an SOS's dispatch reads the rows due, and must not wait for it.
    db = Database(database(tmp_path, "alerts.db"))
    store = AlertStore(db)
    first = insert(store, AlertType.SOS, Severity.RED, "r-1", DAY)
    seen: dict[str, object] = {}

    def long_read(pause: Callable[[], None]) -> None:
        with db.snapshot():
            seen["before"] = [a.id for a in store.running()]
            pause()
            seen["after"] = [a.id for a in store.running()]   # the same view, though a commit came meanwhile
        seen["done"] = True

    with paused_in_another_thread(long_read):
        second = insert(store, AlertType.FALL, Severity.RED, "r-2", DAY + 1)
        assert sorted(a.id for a in store.running()) == [first, second]
        assert "done" not in seen
    assert seen["before"] == seen["after"] == [first]   # one view: SQLite's read transaction, PostgreSQL's repeatable read
    db.close()


def test_starting_twice_keeps_the_alerts_and_applies_no_migration_again(tmp_path, store_backend):
    first = Database(database(tmp_path, "alerts.db"))
    alert_id = insert(AlertStore(first), AlertType.SOS, Severity.RED, "r-1", DAY)
    first.close()
    again = Database(database(tmp_path, "alerts.db"))
    assert [a.id for a in AlertStore(again).unresolved()] == [alert_id]
    assert again.conn.dialect.version(again.conn, "alerts") == SCHEMA_VERSION
    again.close()


def test_device_states_saved_as_objects_by_version_1_are_read_back_and_new_ones_carry_their_fields(tmp_path):
    path = tmp_path / "device_state.db"
    with sqlite3.connect(path) as c:
        c.executescript("CREATE TABLE device_state (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,"
                        " updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
                        """INSERT INTO device_state VALUES ('w1', 'watch', '{"last_seen_ms": 5}', 1000);"""
                        "PRAGMA user_version = 1;")
    states = DeviceStateStore(path)
    try:
        states.save([("w2", "watch", "[6, true]")], {"watch": ("last_seen_ms", "worn"), "equipment": ("x",)}, 2000)
        assert sorted(states.load()) == [SavedState("w1", "watch", '{"last_seen_ms": 5}', None),
                                         SavedState("w2", "watch", "[6, true]", ("last_seen_ms", "worn"))]
    finally:
        states.close()


def test_device_states_are_replaced_and_each_keeps_the_fields_it_was_saved_with(tmp_path, store_backend):
    """A newer version saves some devices with more fields; the others are still read with their own."""
    states = DeviceStateStore(database(tmp_path, "device_state.db"))
    try:
        states.save([("w1", "watch", "[1]"), ("w2", "watch", "[2]")], {"watch": ("last_seen_ms",)}, 1000)
        states.save([("w1", "watch", "[3, 4]")], {"watch": ("last_seen_ms", "cadence_ms")}, 2000)
        assert sorted(states.load()) == [SavedState("w1", "watch", "[3, 4]", ("last_seen_ms", "cadence_ms")),
                                         SavedState("w2", "watch", "[2]", ("last_seen_ms",))]
    finally:
        states.close()
