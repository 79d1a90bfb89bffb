"""The store process: the telemetry lane's commits made in a child process, against a real SQLite file."""
from __future__ import annotations

import os
import signal

import pytest

from gateway.models import DeviceKind, DeviceMessage, Location
from gateway.store import BatchRows, DeadLetter, OperationalStore, batch_rows
from gateway.store_process import StoreProcess, StoreProcessError
from tests.unit.exercise_support import workout

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def fix(device_id: str, seq: int) -> DeviceMessage:
    return DeviceMessage(device_id, DeviceKind.WATCH,
                         Location(ts=T0 + seq * 1000, seq=seq, lat=52.0 + seq / 100, lon=13.0, accuracy_m=5.0))


@pytest.fixture
def path(tmp_path):
    return tmp_path / "gateway.db"


@pytest.fixture
def process(path):
    p = StoreProcess(path, claim_ttl_s=600, checkpoint_pages=0)
    p.start()
    yield p
    p.stop()


def test_rows_committed_in_the_store_process_are_what_the_gateways_store_reads(process, path):
    dead = DeadLetter(T0, "eldercare/watch/w1/location", "bad_json", "not valid JSON", b"{", 1)
    process.commit(batch_rows([fix("w1", 1), fix("w1", 2), fix("w2", 1)], [dead], T0 + 5000))
    store = OperationalStore(path)
    assert store.already_seen([("w1", T0 + 1000, 1), ("w1", T0 + 2000, 2), ("w2", T0 + 1000, 1)]) == {
        ("w1", T0 + 1000, 1), ("w1", T0 + 2000, 2), ("w2", T0 + 1000, 1)}
    state = store.last_state("w1")
    assert state is not None and (state["lat"], state["position_ts"]) == (52.02, T0 + 2000)
    assert [ts for ts, _, _ in store.track("w1")] == [T0 + 1000, T0 + 2000]
    assert store.dead_letter_counts() == {"bad_json": 1}


def test_an_exercise_sessions_news_comes_back_from_the_store_process_as_the_store_gives_it(process, tmp_path):
    messages = workout("m1", "s1", T0, minutes=10)
    news = process.commit(batch_rows(messages, [], T0 + 600_000))
    expected = OperationalStore(tmp_path / "other.db").commit_batch(messages, [], T0 + 600_000)
    assert [(n.device_id, n.session_id, n.closed, n.claimable_until_ms) for n in news] == [
        (n.device_id, n.session_id, n.closed, n.claimable_until_ms) for n in expected]
    assert [n.closed for n in news] == [False, True]   # opened, then ended, in one batch


def test_a_failed_commit_raises_its_reason_in_the_parent_commits_nothing_and_the_next_one_goes_through(process, path):
    good = batch_rows([fix("w1", 1)], [], T0)
    broken = BatchRows(T0, [("w1", T0 + 2000, 2, T0)], [], [], [], [(T0, None, "x", "x", b"", 0)])   # topic NOT NULL
    with pytest.raises(StoreProcessError, match="IntegrityError"):
        process.commit(broken)
    process.commit(good)
    store = OperationalStore(path)
    assert store.already_seen([("w1", T0 + 1000, 1), ("w1", T0 + 2000, 2)]) == {("w1", T0 + 1000, 1)}


def test_a_store_process_killed_loses_nothing_the_commit_is_retried_in_a_new_one(process, path):
    process.commit(batch_rows([fix("w1", 1)], [], T0))
    killed = process.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    second = batch_rows([fix("w1", 2)], [], T0)
    with pytest.raises(StoreProcessError, match="ended during a commit"):
        process.commit(second)   # not known to be committed: the caller keeps the batch unacknowledged
    process.commit(second)       # the retry, in a new process
    process.commit(second)       # and once more, as a retry after a commit that did go through: no change
    assert process.pid != killed
    store = OperationalStore(path)
    assert store.seen_count() == 2
    assert [ts for ts, _, _ in store.track("w1")] == [T0 + 1000, T0 + 2000]


def test_a_stopped_store_process_refuses_commits_instead_of_waiting(process):
    process.stop()
    with pytest.raises(StoreProcessError, match="not running"):
        process.commit(batch_rows([fix("w1", 1)], [], T0))
