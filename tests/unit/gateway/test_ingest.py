"""IngestPipeline: judge, dedup, write, observe and commit one batch, with fakes at the edges."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.config import IngestSettings
from gateway.ingest import DeviceRegistry, IngestPipeline
from gateway.models import DeviceKind
from gateway.mqtt_edge import Received
from gateway.sink import SinkRejected
from gateway.store import OperationalStore
from gateway.topics import Topics
from tests.fixtures.postgres import database

NOW_MS = 1_767_225_660_000  # 2026-01-01T00:01Z, the fixed clock
HEALTH = "eldercare/watch/w1/health"


def key(seq: int) -> tuple[str, int, int]:
    """The idempotency key of heart_rate(seq) from w1, whose device time is T0 + seq ms."""
    return ("w1", 1_767_225_600_000 + seq, seq)


class RecordingSink:
    def __init__(self, fail_with: Exception | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_with = fail_with

    def write(self, lines):
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(lines))

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch]


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[list, int]] = []
        self.refused: list = []

    def observe(self, messages, now_ms):
        self.calls.append((list(messages), now_ms))

    def observe_refused(self, refusals, now_ms):
        self.refused.extend(refusals)

    @property
    def keys(self) -> list[tuple[str, int, int]]:
        return [m.key for messages, _ in self.calls for m in messages]


@pytest.fixture
def store(tmp_path, store_backend):
    s = OperationalStore(database(tmp_path, "gateway.db"))
    s.register_device("w1", DeviceKind.WATCH, now_ms=0)
    yield s
    s.close()


@pytest.fixture
def sink():
    return RecordingSink()


@pytest.fixture
def observer():
    return RecordingObserver()


def pipeline(store, sink, observer=None, **settings) -> IngestPipeline:
    return IngestPipeline(Topics(), store, sink, IngestSettings(**settings), observer=observer,
                          clock=lambda: NOW_MS / 1000)


def received(topic: str, payload: bytes, mid: int = 1) -> Received:
    return Received(topic, payload, mid=mid, qos=1, received_ms=NOW_MS, connection=1)


def heart_rate(seq: int, bpm: int = 72, device_id: str = "w1") -> Received:
    return received(f"eldercare/watch/{device_id}/health",
                    b'{"ts": %d, "seq": %d, "heart_rate": %d}' % (1_767_225_600_000 + seq, seq, bpm), mid=seq)


def test_a_mixed_batch_writes_the_valid_messages_once_and_dead_letters_the_rest(store, sink, observer):
    p = pipeline(store, sink, observer)
    p.handle([
        heart_rate(1),
        received(HEALTH, b"{not json"),
        heart_rate(2),
        received(HEALTH, b'{"ts": 1767225600003, "seq": 3, "heart_rate": 400}'),
        received("eldercare/watch/w1", b"{}"),
    ])
    assert sink.lines == [
        "health,device_id=w1,kind=watch seq=1i,heart_rate=72i 1767225600001",
        "health,device_id=w1,kind=watch seq=2i,heart_rate=72i 1767225600002",
    ]
    assert [d.reason for d in store.dead_letters()] == ["bad_json", "invalid_field", "bad_topic"]
    assert [now_ms for _, now_ms in observer.calls] == [NOW_MS]
    assert observer.keys == [key(1), key(2)]


def test_a_mixed_batch_is_counted_by_outcome(store, sink):
    p = pipeline(store, sink)
    p.handle([heart_rate(1), received(HEALTH, b"{not json"), heart_rate(2), heart_rate(2)])
    assert p.stats.as_dict() == {"received": 4, "accepted": 2, "duplicates": 1, "ignored": 0,
                                 "dead_letters": {"bad_json": 1}}


def test_accepted_messages_are_committed_as_seen_with_the_clocks_time(store, sink):
    pipeline(store, sink).handle([heart_rate(1)])
    assert store.already_seen([key(1)]) == {key(1)}
    assert store.last_state("w1")["last_seen_ms"] == NOW_MS


def test_a_dead_letter_keeps_the_topic_the_detail_and_the_payload_cut_to_the_configured_size(store, sink):
    payload = b'{"ts": 1767225600003, "seq": 3, "heart_rate": 400, "padding": "' + b"x" * 100 + b'"}'
    pipeline(store, sink, dead_letter_payload_bytes=16).handle([received(HEALTH, payload)])
    [letter] = store.dead_letters()
    assert (letter.topic, letter.reason, letter.received_ms) == (HEALTH, "invalid_field", NOW_MS)
    assert "heart_rate" in letter.detail
    assert (letter.payload, letter.payload_size) == (payload[:16], len(payload))


def test_a_redelivered_message_in_a_later_batch_is_written_once(store, sink, observer):
    p = pipeline(store, sink, observer)
    p.handle([heart_rate(1)])
    p.handle([heart_rate(1), heart_rate(2)])
    assert sink.batches == [
        ["health,device_id=w1,kind=watch seq=1i,heart_rate=72i 1767225600001"],
        ["health,device_id=w1,kind=watch seq=2i,heart_rate=72i 1767225600002"],
    ]
    assert observer.keys == [key(1), key(2)]
    assert p.stats.duplicates == 1


def test_the_same_key_twice_in_one_batch_is_written_once(store, sink, observer):
    p = pipeline(store, sink, observer)
    p.handle([heart_rate(1, bpm=72), heart_rate(1, bpm=72)])
    assert sink.lines == ["health,device_id=w1,kind=watch seq=1i,heart_rate=72i 1767225600001"]
    assert observer.keys == [key(1)]


def test_a_batch_of_only_duplicates_writes_nothing(store, sink, observer):
    p = pipeline(store, sink, observer)
    p.handle([heart_rate(1)])
    p.handle([heart_rate(1)])
    assert len(sink.batches) == 1 and len(observer.calls) == 1


def test_a_message_from_an_unregistered_device_is_dead_lettered_as_unknown_device(store, sink):
    pipeline(store, sink).handle([heart_rate(1, device_id="w9")])
    [letter] = store.dead_letters()
    assert (letter.reason, letter.detail) == ("unknown_device", "device 'w9' is not registered")
    assert sink.lines == [] and store.device("w9") is None


def test_with_auto_register_an_unregistered_device_is_registered_and_accepted(store, sink):
    pipeline(store, sink, auto_register=True).handle([heart_rate(1, device_id="w9")])
    assert store.device("w9").kind == DeviceKind.WATCH
    assert store.device("w9").registered_ms == NOW_MS
    assert sink.lines == ["health,device_id=w9,kind=watch seq=1i,heart_rate=72i 1767225600001"]
    assert store.dead_letters() == []


def test_a_device_registered_while_the_pipeline_runs_is_admitted(store, sink):
    p = pipeline(store, sink)
    store.register_device("w9", DeviceKind.WATCH, now_ms=NOW_MS)
    p.handle([heart_rate(1, device_id="w9")])
    assert len(sink.lines) == 1



def test_a_watch_publishing_as_equipment_is_dead_lettered_as_kind_mismatch(store, sink, observer):
    telemetry = received("eldercare/equipment/w1/telemetry",
                         b'{"ts": 1767225600001, "seq": 1, "session_id": "s1", "elapsed_s": 60, "count": 80,'
                         b' "energy_kcal": 9.5, "heart_rate": 190}')
    pipeline(store, sink, observer).handle([telemetry])
    [letter] = store.dead_letters()
    assert (letter.reason, letter.detail) == ("kind_mismatch", "device 'w1' is registered as watch, not equipment")
    assert letter.topic == "eldercare/equipment/w1/telemetry"
    assert sink.lines == [] and observer.calls == []


def test_lanes_sharing_a_registry_know_what_either_auto_registered(store, sink):
    registry = DeviceRegistry(store, auto_register=True)
    critical, telemetry = (IngestPipeline(Topics(), store, sink, IngestSettings(auto_register=True),
                                          clock=lambda: NOW_MS / 1000, registry=registry) for _ in range(2))
    telemetry.handle([heart_rate(1, device_id="w9")])
    assert ("w9", DeviceKind.WATCH) in registry.known()
    store.db.execute("DELETE FROM devices WHERE device_id = 'w9'")   # the shared cache answers, not the store
    critical.handle([heart_rate(2, device_id="w9")])
    assert critical.stats.accepted == 1 and store.device("w9") is None
    assert sorted(registry.known()) == [("w1", DeviceKind.WATCH), ("w9", DeviceKind.WATCH)]


def test_auto_register_does_not_let_a_registered_device_change_its_kind(store, sink):
    pipeline(store, sink, auto_register=True).handle([received(
        "eldercare/equipment/w1/session",
        b'{"ts": 1767225600001, "seq": 1, "event": "start", "session_id": "s1", "equipment_type": "rower"}')])
    assert [d.reason for d in store.dead_letters()] == ["kind_mismatch"]
    assert store.device("w1").kind == DeviceKind.WATCH


def test_a_device_re_registered_as_another_kind_is_judged_by_its_new_kind_once_it_publishes_as_such(store, sink):
    p = pipeline(store, sink)
    p.handle([heart_rate(1)])
    store.register_device("w1", DeviceKind.EQUIPMENT, now_ms=NOW_MS)
    p.handle([received("eldercare/equipment/w1/session",
                       b'{"ts": 1767225600002, "seq": 2, "event": "start", "session_id": "s1", "equipment_type": "rower"}'),
              heart_rate(3)])
    assert len(sink.lines) == 2
    assert [d.reason for d in store.dead_letters()] == ["kind_mismatch"]



def test_a_batch_the_sink_rejects_goes_to_dead_letter_but_the_alert_engine_still_saw_it(store, observer):
    sink = RecordingSink(fail_with=SinkRejected("store refused the batch: HTTP 400"))
    p = pipeline(store, sink, observer)
    p.handle([heart_rate(1), heart_rate(2)])
    assert [(d.reason, d.detail) for d in store.dead_letters()] == [
        ("sink_rejected", "store refused the batch: HTTP 400"),
        ("sink_rejected", "store refused the batch: HTTP 400"),
    ]
    assert store.dead_letters()[0].payload == b'{"ts": 1767225600001, "seq": 1, "heart_rate": 72}'
    assert store.already_seen([key(1), key(2)]) == set()
    # An SOS must raise its alert even if the time-series store refuses its point.
    assert observer.keys == [key(1), key(2)]
    assert (p.stats.accepted, p.stats.dead_letters["sink_rejected"]) == (0, 2)


def test_a_key_written_and_not_yet_committed_is_dropped_from_the_next_batch(store, sink):
    # The telemetry lane writes batch N+1 while batch N is committed: N's keys are in flight meanwhile.
    p = pipeline(store, sink)
    first = p.prepare(p.judge([heart_rate(1)]))
    second = p.prepare(p.judge([heart_rate(1), heart_rate(2)]))   # a redelivery of 1 comes with 2
    assert [m.key for m in second.accepted] == [key(2)]
    p.record(first)
    p.record(second)
    assert len(sink.lines) == 2 and store.already_seen([key(1), key(2)]) == {key(1), key(2)}
    assert (p.stats.received, p.stats.accepted, p.stats.duplicates) == (3, 2, 1)


def test_a_commit_that_fails_keeps_its_keys_in_flight_for_the_retry_and_one_given_up_is_taken_again(store, sink):
    p = pipeline(store, sink)
    outage = [True]

    def fence(db):
        if outage[0]:
            raise ConnectionError("store unreachable")

    store.fence = fence
    first = p.prepare(p.judge([heart_rate(1)]))
    with pytest.raises(ConnectionError):
        p.record(first)
    assert p.prepare(p.judge([heart_rate(1)])).accepted == []   # the retry of `first` will commit it
    p.forget(first)                                             # ... unless it is given up
    again = p.prepare(p.judge([heart_rate(1)]))
    assert [m.key for m in again.accepted] == [key(1)]
    outage[0] = False
    p.record(again)
    assert store.already_seen([key(1)]) == {key(1)} and p.stats.accepted == 1


def test_a_commit_retried_after_one_that_failed_having_committed_does_not_apply_the_batch_twice(store, sink):
    # A connection lost during COMMIT: the server committed, the client saw an error and tries again.
    p = pipeline(store, sink)
    real, applied = p.commit_rows, []

    def commit_rows(rows):
        applied.append([(device_id, ts, seq) for ts, device_id, seq, _ in rows.seen])
        news = real(rows)
        if len(applied) == 1:
            raise ConnectionError("server closed the connection during COMMIT")
        return news

    p.commit_rows = commit_rows
    first = p.prepare(p.judge([heart_rate(1), heart_rate(2)]))
    with pytest.raises(ConnectionError):
        p.record(first)
    p.record(first)
    assert applied == [[key(1), key(2)], []]   # exercise sessions, say, are folded once
    assert store.already_seen([key(1), key(2)]) == {key(1), key(2)} and p.stats.accepted == 2


def test_a_batch_whose_commit_fails_in_one_go_can_be_handled_again_in_full(store, sink):
    p = pipeline(store, sink)
    store.fence = lambda db: (_ for _ in ()).throw(ConnectionError("store unreachable"))
    with pytest.raises(ConnectionError):
        p.handle([heart_rate(1)])
    store.fence = None
    p.handle([heart_rate(1)])
    assert store.already_seen([key(1)]) == {key(1)} and p.stats.accepted == 1


def test_a_sink_failure_propagates_and_the_store_commits_nothing(store, observer):
    sink = RecordingSink(fail_with=ConnectionError("store unreachable"))
    p = pipeline(store, sink, observer)
    with pytest.raises(ConnectionError):
        p.handle([heart_rate(1), received(HEALTH, b"{not json")])
    assert store.already_seen([key(1)]) == set()
    assert store.dead_letters() == [] and store.last_state("w1") is None
    # The observer ran first (alerts never wait for the time-series write) and dedups the redelivery itself.
    assert observer.keys == [key(1)] and p.stats.accepted == 0


def test_a_batch_that_failed_in_the_sink_is_handled_in_full_when_retried(store, observer):
    sink = RecordingSink(fail_with=ConnectionError("store unreachable"))
    p = pipeline(store, sink, observer)
    batch = [heart_rate(1), received(HEALTH, b"{not json")]
    with pytest.raises(ConnectionError):
        p.handle(batch)
    sink.fail_with = None
    p.handle(batch)
    assert sink.lines == ["health,device_id=w1,kind=watch seq=1i,heart_rate=72i 1767225600001"]
    assert [d.reason for d in store.dead_letters()] == ["bad_json"]
    assert observer.keys == [key(1), key(1)]  # seen again on the retry; the alert engine dedups by key
    # The counts (what /metrics reports) are those of the one batch that was committed, not of both tries.
    assert (p.stats.received, p.stats.accepted, dict(p.stats.dead_letters)) == (2, 1, {"bad_json": 1})


def test_an_observer_failure_propagates_and_commits_nothing(store, sink):
    class FailingObserver:
        def observe(self, messages, now_ms):
            raise RuntimeError("alert engine down")

    p = pipeline(store, sink, FailingObserver())
    with pytest.raises(RuntimeError):
        p.handle([heart_rate(1)])
    assert store.already_seen([key(1)]) == set()


def test_topics_the_skip_predicate_names_are_ignored_not_dead_lettered(store, sink):
    p = IngestPipeline(Topics(), store, sink, IngestSettings(), skip=lambda topic: topic.endswith("/cmd"),
                       clock=lambda: NOW_MS / 1000)
    p.handle([received("eldercare/watch/w1/cmd", b'{"action": "vibrate"}'), heart_rate(1)])
    assert store.dead_letters() == []
    assert len(sink.lines) == 1
    assert p.stats.ignored == 1


def test_a_watch_that_rebooted_and_counts_seq_from_one_again_is_new_data(store, sink, observer):
    p = pipeline(store, sink, observer)
    p.handle([heart_rate(1)])
    # Battery out and back: seq restarts at 1, the device clock has moved on by a minute.
    rebooted = received(HEALTH, b'{"ts": %d, "seq": 1, "heart_rate": 75}' % (1_767_225_600_001 + 60_000), mid=99)
    p.handle([rebooted])
    assert len(sink.lines) == 2
    assert observer.keys == [key(1), ("w1", 1_767_225_660_001, 1)]
    assert p.stats.duplicates == 0


def test_a_message_from_a_clock_far_ahead_is_dead_lettered_as_ts_in_future_and_shown_to_the_alert_engine(store, sink):
    class SkewObserver(RecordingObserver):
        def __init__(self) -> None:
            super().__init__()
            self.skewed: list = []

        def observe_clock_skew(self, messages, now_ms):
            self.skewed.extend(messages)

    observer = SkewObserver()
    eleven_minutes_ahead = NOW_MS + 11 * 60_000
    late_by_nine = NOW_MS + 9 * 60_000
    p = pipeline(store, sink, observer)
    p.handle([received(HEALTH, b'{"ts": %d, "seq": 1, "heart_rate": 72}' % eleven_minutes_ahead),
              received(HEALTH, b'{"ts": %d, "seq": 2, "heart_rate": 72}' % late_by_nine)])
    [letter] = store.dead_letters()
    assert letter.reason == "ts_in_future" and "660 s ahead" in letter.detail
    assert [m.payload.seq for m in observer.skewed] == [1]
    assert observer.keys == [("w1", late_by_nine, 2)]   # within the allowed skew: accepted as usual
    assert store.last_state("w1")["health_ts"] == late_by_nine


def test_readings_a_device_got_wrong_are_shown_to_the_alert_engine_and_nothing_else_is(store, sink, observer):
    p = pipeline(store, sink, observer)
    p.handle([received("eldercare/equipment/rower-01/telemetry",
                       b'{"ts": 1767225600001, "seq": 1, "session_id": "s1", "elapsed_s": 5, "count": 2,'
                       b' "energy_kcal": 1.0, "power_w": 9000}'),
              received(HEALTH, b"{not json", mid=2),
              received("eldercare/watch/w1/toaster", b'{"ts": 1767225600001, "seq": 3}', mid=3),
              received("not/a/device/topic/at/all", b"{}", mid=4)])
    assert [(r.device_id, r.kind, r.reason) for r in observer.refused] == [
        ("rower-01", DeviceKind.EQUIPMENT, "invalid_field"), ("w1", DeviceKind.WATCH, "bad_json")]
    assert "power_w" in observer.refused[0].detail


def test_the_lane_that_never_checkpoints_leaves_the_write_ahead_log_to_the_lane_that_does(tmp_path, sink):
    """SQLite: the critical lane's commits never copy the log back into the database file (an SOS would
    wait for it); the telemetry lane's do, once the log holds its number of pages."""
    path = tmp_path / "gateway.db"
    s = OperationalStore(path)
    s.register_device("w1", DeviceKind.WATCH, now_ms=0)
    critical, telemetry = (IngestPipeline(Topics(), s, sink, IngestSettings(), clock=lambda: NOW_MS / 1000,
                                          checkpoint_pages=pages) for pages in (0, 10))

    def in_a_thread_of_its_own(work) -> None:   # as each lane's commit thread has its own connection
        t = threading.Thread(target=work)
        t.start()
        t.join()

    before = path.stat().st_size
    in_a_thread_of_its_own(lambda: [critical.handle([heart_rate(n)]) for n in range(1, 700)])
    assert Path(f"{path}-wal").stat().st_size > 1000 * 4096   # past SQLite's own threshold
    assert path.stat().st_size == before
    in_a_thread_of_its_own(lambda: telemetry.handle([heart_rate(700)]))
    assert path.stat().st_size > before
    assert s.seen_count() == 700
    s.close()


def test_each_step_of_a_batch_is_timed_under_its_lane(store, sink, observer):
    from prometheus_client import REGISTRY

    def spent(stage: str) -> float:
        return REGISTRY.get_sample_value("eldercare_ingest_stage_seconds_total", {"lane": "timed", "stage": stage}) or 0.0

    p = IngestPipeline(Topics(), store, sink, IngestSettings(), observer=observer, clock=lambda: NOW_MS / 1000,
                       lane="timed")
    p.handle([heart_rate(1), heart_rate(2)])
    assert all(spent(stage) > 0 for stage in ("judge", "dedup", "rules", "timeseries", "store"))
