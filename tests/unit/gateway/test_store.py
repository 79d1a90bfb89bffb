"""The operational store: last state, track, dedup keys, dead letters and the device registry."""
from __future__ import annotations

import threading

import pytest

from gateway.models import DeviceKind, DeviceMessage, Health, Location, SosPressed, WatchStatus
from gateway.store import DeadLetter, Device, OperationalStore, state_updates
from tests.fixtures.postgres import database

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
HOUR = 3_600_000


@pytest.fixture
def store(tmp_path, store_backend):
    s = OperationalStore(database(tmp_path, "gateway.db"))
    yield s
    s.close()


def watch(payload) -> DeviceMessage:
    return DeviceMessage("w1", DeviceKind.WATCH, payload)


def fix(seq: int, ts: int, lat: float, lon: float) -> DeviceMessage:
    return watch(Location(ts=ts, seq=seq, lat=lat, lon=lon, accuracy_m=5.0))


# -- state_updates (pure) -------------------------------------------------


def test_state_updates_keeps_the_newest_position_of_a_batch_whatever_the_arrival_order():
    rows = state_updates([fix(2, T0 + 2000, 52.2, 13.2), fix(1, T0 + 1000, 52.1, 13.1)], received_ms=T0 + 5000)
    assert (rows["w1"]["lat"], rows["w1"]["lon"], rows["w1"]["position_ts"]) == (52.2, 13.2, T0 + 2000)


def test_state_updates_keeps_each_aspect_from_its_own_newest_message():
    rows = state_updates([
        watch(WatchStatus(ts=T0 + 1000, seq=1, battery=80, worn=True)),
        fix(2, T0 + 2000, 52.2, 13.2),
        watch(WatchStatus(ts=T0 + 3000, seq=3, battery=79, worn=False)),
    ], received_ms=T0 + 5000)
    row = rows["w1"]
    assert (row["battery"], row["worn"], row["status_ts"]) == (79, 0, T0 + 3000)
    assert (row["lat"], row["position_ts"]) == (52.2, T0 + 2000)


def test_state_updates_takes_an_alarms_position_as_the_latest_position():
    rows = state_updates([fix(1, T0 + 1000, 52.1, 13.1), watch(SosPressed(ts=T0 + 2000, seq=2, lat=52.9, lon=13.9))],
                         received_ms=T0 + 5000)
    assert (rows["w1"]["lat"], rows["w1"]["position_ts"]) == (52.9, T0 + 2000)


def test_state_updates_ignores_an_alarm_without_a_position():
    rows = state_updates([fix(1, T0 + 1000, 52.1, 13.1), watch(SosPressed(ts=T0 + 2000, seq=2))], received_ms=T0 + 5000)
    assert (rows["w1"]["lat"], rows["w1"]["position_ts"]) == (52.1, T0 + 1000)


def test_state_updates_marks_every_device_as_seen_at_the_receive_time():
    rows = state_updates([fix(1, T0, 52.1, 13.1)], received_ms=T0 + 5000)
    assert rows["w1"]["last_seen_ms"] == T0 + 5000


# -- last_state across batches ---------------------------------------------


def test_last_state_does_not_move_back_when_an_older_position_arrives_later(store):
    store.commit_batch([fix(2, T0 + 2000, 52.2, 13.2)], [], received_ms=T0 + 3000)
    store.commit_batch([fix(1, T0 + 1000, 52.1, 13.1)], [], received_ms=T0 + 4000)
    state = store.last_state("w1")
    assert (state["lat"], state["lon"], state["position_ts"]) == (52.2, 13.2, T0 + 2000)
    assert state["last_seen_ms"] == T0 + 4000


def test_last_state_does_not_move_back_when_an_older_status_arrives_later(store):
    store.commit_batch([watch(WatchStatus(ts=T0 + 2000, seq=2, battery=40, worn=True))], [], received_ms=T0 + 3000)
    store.commit_batch([watch(WatchStatus(ts=T0 + 1000, seq=1, battery=90, worn=False))], [], received_ms=T0 + 4000)
    assert (store.last_state("w1")["battery"], store.last_state("w1")["worn"]) == (40, 1)


def test_a_status_message_leaves_the_last_position_alone(store):
    store.commit_batch([fix(1, T0 + 1000, 52.1, 13.1)], [], received_ms=T0 + 3000)
    store.commit_batch([watch(WatchStatus(ts=T0 + 2000, seq=2, battery=40, worn=True))], [], received_ms=T0 + 4000)
    assert (store.last_state("w1")["lat"], store.last_state("w1")["battery"]) == (52.1, 40)


def test_a_newer_spo2_reading_keeps_the_last_heart_rate_across_batches(store):
    store.commit_batch([watch(Health(ts=T0 + 1000, seq=1, heart_rate=72))], [], received_ms=T0 + 3000)
    store.commit_batch([watch(Health(ts=T0 + 2000, seq=2, spo2=95))], [], received_ms=T0 + 4000)
    assert (store.last_state("w1")["heart_rate"], store.last_state("w1")["spo2"]) == (72, 95)


def test_a_newer_spo2_reading_keeps_the_last_heart_rate_within_one_batch(store):
    store.commit_batch([watch(Health(ts=T0 + 1000, seq=1, heart_rate=72)), watch(Health(ts=T0 + 2000, seq=2, spo2=95))],
                       [], received_ms=T0 + 3000)
    assert (store.last_state("w1")["heart_rate"], store.last_state("w1")["spo2"]) == (72, 95)


def test_an_unknown_device_has_no_last_state(store):
    assert store.last_state("nobody") is None


# -- track -------------------------------------------------------------------


def test_the_track_keeps_every_position_in_device_time_order(store):
    store.commit_batch([fix(2, T0 + 2000, 52.2, 13.2)], [], received_ms=T0 + 3000)
    store.commit_batch([fix(1, T0 + 1000, 52.1, 13.1)], [], received_ms=T0 + 4000)
    assert store.track("w1") == [(T0 + 1000, 52.1, 13.1), (T0 + 2000, 52.2, 13.2)]


# -- dedup keys ----------------------------------------------------------------


def test_already_seen_finds_committed_keys_and_no_others(store):
    store.commit_batch([fix(1, T0, 52.1, 13.1), fix(2, T0 + 1000, 52.2, 13.2)], [], received_ms=T0 + 3000)
    asked = [("w1", T0, 1), ("w1", T0 + 1000, 3), ("w2", T0 + 1000, 2), ("w1", T0 + 1000, 2)]
    assert store.already_seen(asked) == {("w1", T0, 1), ("w1", T0 + 1000, 2)}


def test_a_rebooted_watch_counting_seq_from_one_again_is_not_already_seen(store):
    store.commit_batch([watch(SosPressed(ts=T0, seq=1))], [], received_ms=T0)
    # Battery out, back on an hour later: seq starts at 1 again, with a newer device time.
    assert store.already_seen([("w1", T0 + HOUR, 1)]) == set()
    assert store.already_seen([("w1", T0, 1)]) == {("w1", T0, 1)}  # a true redelivery still is


def test_already_seen_answers_for_a_thousand_keys_at_once(store):
    store.commit_batch([fix(seq, T0 + seq, 52.0, 13.0) for seq in range(0, 1000, 2)], [], received_ms=T0)
    asked = [("w1", T0 + seq, seq) for seq in range(1000)]
    assert store.already_seen(asked) == {("w1", T0 + seq, seq) for seq in range(0, 1000, 2)}


def test_already_seen_handles_the_largest_seq(store):
    store.commit_batch([watch(SosPressed(ts=T0, seq=2**63 - 1))], [], received_ms=T0)
    assert store.already_seen([("w1", T0, 2**63 - 1), ("w1", T0, 2**63 - 2)]) == {("w1", T0, 2**63 - 1)}


def test_already_seen_of_no_keys_is_empty(store):
    assert store.already_seen([]) == set()


# -- dead letters ----------------------------------------------------------------


def test_a_dead_letter_keeps_its_reason_detail_and_cut_payload_with_the_original_size(store):
    letter = DeadLetter(T0, "eldercare/watch/w1/health", "invalid_field", "field 'spo2': too high", b'{"ts": 17', 4000)
    store.commit_batch([], [letter], received_ms=T0)
    assert store.dead_letters() == [letter]


def test_dead_letters_can_be_read_by_reason_and_counted(store):
    store.commit_batch([], [
        DeadLetter(T0, "t/a", "bad_json", "x", b"{", 1),
        DeadLetter(T0, "t/b", "bad_topic", "y", b"{}", 2),
        DeadLetter(T0, "t/c", "bad_json", "z", b"[", 1),
    ], received_ms=T0)
    assert [d.topic for d in store.dead_letters("bad_json")] == ["t/a", "t/c"]
    assert store.dead_letter_counts() == {"bad_json": 2, "bad_topic": 1}


# -- prune -----------------------------------------------------------------------


def test_prune_forgets_positions_received_before_the_track_window(store):
    store.commit_batch([fix(1, T0, 52.1, 13.1)], [], received_ms=T0)
    store.commit_batch([fix(2, T0 + 2 * HOUR, 52.2, 13.2)], [], received_ms=T0 + 2 * HOUR)
    store.prune(now_ms=T0 + 3 * HOUR, track_window_ms=2 * HOUR, dedup_window_ms=10 * HOUR, dead_letter_window_ms=HOUR)
    assert store.track("w1") == [(T0 + 2 * HOUR, 52.2, 13.2)]


def test_a_position_from_a_clock_far_ahead_is_still_pruned_by_its_receive_time(store):
    year_2090 = 3_786_000_000_000
    store.commit_batch([fix(1, year_2090, 52.1, 13.1)], [], received_ms=T0)
    store.prune(now_ms=T0 + 3 * HOUR, track_window_ms=2 * HOUR, dedup_window_ms=HOUR, dead_letter_window_ms=HOUR)
    assert store.track("w1") == []


def test_prune_forgets_dead_letters_older_than_their_retention_and_says_how_many(store):
    store.commit_batch([], [DeadLetter(T0, "t/a", "bad_json", "x", b"{", 1)], received_ms=T0)
    store.commit_batch([], [DeadLetter(T0 + 2 * HOUR, "t/b", "bad_json", "y", b"[", 1)], received_ms=T0 + 2 * HOUR)
    removed = store.prune(now_ms=T0 + 3 * HOUR, track_window_ms=HOUR, dedup_window_ms=HOUR, dead_letter_window_ms=2 * HOUR)
    assert [d.topic for d in store.dead_letters()] == ["t/b"]
    assert removed["dead_letter"] == 1


def test_prune_forgets_dedup_keys_received_before_the_dedup_window(store):
    store.commit_batch([fix(1, T0, 52.1, 13.1)], [], received_ms=T0)
    store.commit_batch([fix(2, T0, 52.1, 13.1)], [], received_ms=T0 + 2 * HOUR)
    store.prune(now_ms=T0 + 3 * HOUR, track_window_ms=10 * HOUR, dedup_window_ms=2 * HOUR, dead_letter_window_ms=HOUR)
    assert store.already_seen([("w1", T0, 1), ("w1", T0, 2)]) == {("w1", T0, 2)}


def test_prune_keeps_a_dedup_key_from_a_clock_behind_for_its_whole_window(store):
    year_2015 = 1_420_070_400_000
    store.commit_batch([fix(1, year_2015, 52.1, 13.1)], [], received_ms=T0 + 2 * HOUR)
    store.prune(now_ms=T0 + 3 * HOUR, track_window_ms=10 * HOUR, dedup_window_ms=2 * HOUR, dead_letter_window_ms=HOUR)
    assert store.already_seen([("w1", year_2015, 1)]) == {("w1", year_2015, 1)}
    store.prune(now_ms=T0 + 5 * HOUR, track_window_ms=10 * HOUR, dedup_window_ms=2 * HOUR, dead_letter_window_ms=HOUR)
    assert store.already_seen([("w1", year_2015, 1)]) == set()


def test_prune_forgets_a_dedup_key_from_a_clock_ahead_once_its_device_time_has_left_the_window_too(store):
    ahead = T0 + HOUR // 6   # ten minutes ahead: as far as ingest lets a clock be by default
    store.commit_batch([fix(1, ahead, 52.1, 13.1)], [], received_ms=T0)
    removed = store.prune(now_ms=T0 + 2 * HOUR + HOUR // 12, track_window_ms=10 * HOUR, dedup_window_ms=2 * HOUR,
                          dead_letter_window_ms=HOUR)
    assert (removed["seen"], store.already_seen([("w1", ahead, 1)])) == (0, {("w1", ahead, 1)})
    removed = store.prune(now_ms=T0 + 2 * HOUR + HOUR // 6 + 1, track_window_ms=10 * HOUR,
                          dedup_window_ms=2 * HOUR, dead_letter_window_ms=HOUR)
    assert (removed["seen"], store.already_seen([("w1", ahead, 1)])) == (1, set())


def test_prune_keeps_the_last_state(store):
    store.commit_batch([fix(1, T0, 52.1, 13.1)], [], received_ms=T0)
    store.prune(now_ms=T0 + 100 * HOUR, track_window_ms=HOUR, dedup_window_ms=HOUR, dead_letter_window_ms=HOUR)
    assert store.last_state("w1")["lat"] == 52.1


# -- device registry ---------------------------------------------------------------


def test_a_registered_device_can_be_looked_up(store):
    store.register_device("w1", DeviceKind.WATCH, now_ms=T0, label="Mrs. Jansen, room 12")
    assert store.device("w1") == Device("w1", DeviceKind.WATCH, "Mrs. Jansen, room 12", T0)
    assert store.device_ids() == {"w1"}


def test_devices_registered_in_bulk_are_all_there_and_keep_an_earlier_label(store):
    store.register_device("w1", DeviceKind.WATCH, now_ms=T0, label="Mrs. Jansen, room 12")
    store.register_devices((f"w{i}" for i in range(1, 1001)), DeviceKind.WATCH, now_ms=T0 + 1)
    assert len(store.device_ids()) == 1000
    assert store.device("w1") == Device("w1", DeviceKind.WATCH, "Mrs. Jansen, room 12", T0)
    assert store.device("w1000") == Device("w1000", DeviceKind.WATCH, None, T0 + 1)


def test_an_unregistered_device_is_not_found(store):
    assert store.device("w9") is None


def test_registering_again_without_a_label_keeps_the_label_and_first_registration_time(store):
    store.register_device("w1", DeviceKind.WATCH, now_ms=T0, label="room 12")
    store.register_device("w1", DeviceKind.WATCH, now_ms=T0 + HOUR)
    assert store.device("w1") == Device("w1", DeviceKind.WATCH, "room 12", T0)


def test_the_store_keeps_its_data_when_reopened(tmp_path, store_backend):
    first = OperationalStore(database(tmp_path, "gateway.db"))
    first.register_device("w1", DeviceKind.WATCH, now_ms=T0)
    first.close()
    reopened = OperationalStore(database(tmp_path, "gateway.db"))
    assert reopened.device("w1") is not None
    reopened.close()


def test_a_version_1_store_opens_with_its_registry_and_new_shape_dedup_keys(tmp_path):
    import sqlite3
    path = tmp_path / "gateway.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE devices (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT, registered_ms INTEGER NOT NULL,"
        " auto_registered INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
        "CREATE TABLE seen (device_id TEXT NOT NULL, seq INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
        " PRIMARY KEY (device_id, seq)) WITHOUT ROWID;"
        "INSERT INTO devices VALUES ('w1', 'watch', 'room 12', 1, 0); INSERT INTO seen VALUES ('w1', 1, 1);")
    old.close()
    store = OperationalStore(path)
    store.commit_batch([fix(1, T0, 52.1, 13.1)], [], received_ms=T0)
    assert store.device("w1") is not None
    assert store.already_seen([("w1", T0, 1)]) == {("w1", T0, 1)}
    store.close()


def test_a_version_3_store_keeps_its_dedup_keys_in_their_new_order(tmp_path, store_backend):
    """Version 4 orders `seen` by device time; the keys of the dedup window survive the change."""
    from gateway.db import connect, migrate
    from gateway.store import MIGRATIONS
    target = database(tmp_path, "gateway.db")
    old = connect(target, durable=False)
    assert migrate(old, "gateway", [m for m in MIGRATIONS if m.version <= 3]) == 3
    with old.transaction() as db:
        db.executemany("INSERT INTO seen (device_id, ts, seq, received_ms) VALUES (?, ?, ?, ?)",
                       [("w1", T0, 1, T0), ("w2", T0 - HOUR, 7, T0)])
    old.close()
    store = OperationalStore(target)
    assert store.already_seen([("w1", T0, 1), ("w2", T0 - HOUR, 7), ("w1", T0, 2)]) == {("w1", T0, 1),
                                                                                         ("w2", T0 - HOUR, 7)}
    store.commit_batch([fix(2, T0, 52.1, 13.1)], [], received_ms=T0)
    assert store.seen_count() == 3
    store.close()


def test_dedup_lookups_and_the_prune_walk_the_primary_key(tmp_path):
    """What keeps a batch's dedup keys cheap: probed, inserted and pruned along one B-tree ordered by time."""
    store = OperationalStore(tmp_path / "gateway.db")
    statements: list[str] = []
    store.db.raw.set_trace_callback(statements.append)   # the statements as run, their values in place
    store.already_seen([("w1", T0, 1)])
    store.prune(now_ms=T0, track_window_ms=HOUR, dedup_window_ms=HOUR, dead_letter_window_ms=HOUR)
    store.db.raw.set_trace_callback(None)
    plans = [store.db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall() for sql in statements if " seen" in sql]
    key_order = [r[1] for r in sorted(store.db.execute("SELECT pk, name FROM pragma_table_info('seen') WHERE pk > 0"))]
    indexes = store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'seen'").fetchall()
    store.close()
    assert key_order == ["ts", "device_id", "seq"]
    assert indexes == []
    assert len(plans) == 2
    assert all(any("USING PRIMARY KEY (ts" in row[-1] for row in plan) for plan in plans), plans


def test_two_lanes_committing_the_same_devices_in_opposite_orders_both_commit(store):
    """Each lane has its own connection; on PostgreSQL their row locks must never wait on each other in a cycle."""
    devices = [f"w{i}" for i in range(20)]
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def lane(order: list[str], seq_base: int) -> None:
        try:
            for round_ in range(15):
                batch = [DeviceMessage(d, DeviceKind.WATCH, Location(ts=T0 + round_, seq=seq_base + round_, lat=52.0, lon=13.0,
                                                                    accuracy_m=5.0))
                         for d in order]
                start.wait(10)
                store.commit_batch(batch, [], received_ms=T0 + round_)
        except BaseException as e:   # the test thread reports it
            failures.append(e)
            start.abort()
        finally:
            store.close()

    lanes = [threading.Thread(target=lane, args=(devices, 0)), threading.Thread(target=lane, args=(devices[::-1], 100))]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join(60)
    assert failures == []
    assert store.seen_count() == 2 * 15 * len(devices)
