"""Exercise sessions in the operational store (both backends): folded with the batch, closed when idle,
claimed once."""
from __future__ import annotations

import pytest

from gateway.exercise_store import CODE_ALPHABET, CODE_LENGTH, normalise_code, spaced
from gateway.store import OperationalStore
from tests.fixtures.postgres import database
from tests.unit.gateway.test_exercise import T0, end, reading, start, workout

MINUTE = 60_000


@pytest.fixture
def store(tmp_path, store_backend):
    s = OperationalStore(database(tmp_path, "gateway.db"), claim_ttl_s=600)
    yield s
    s.close()


def test_a_session_opens_with_a_claim_code_and_closes_with_its_totals(store):
    news = store.commit_batch(workout(30)[:10], [], T0 + 10_000)
    assert [(n.session_id, n.closed) for n in news] == [("s1", False)]
    code = news[0].claim_code
    assert len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET)
    assert store.exercise_session("rower-01", "s1").open

    news = store.commit_batch(workout(30)[10:], [], T0 + 40_000)
    assert [(n.session_id, n.claim_code, n.closed, n.claimable_until_ms) for n in news] == [
        ("s1", code, True, T0 + 40_000 + 600_000)]
    s = store.exercise_session("rower-01", "s1")
    assert (s.closed_by, s.closed_ms, s.elapsed_s, s.reps, s.distance_m, s.energy_kcal) == ("end", T0 + 40_000, 30, 10, 50.0, 3.0)
    assert store.session_by_code(code) == s


def test_a_session_with_no_end_closes_as_idle_after_the_timeout_and_not_before(store):
    store.commit_batch(workout(30)[:-1], [], T0 + 30_000)
    assert store.close_idle_sessions(T0 + 30_000 + 4 * MINUTE, idle_ms=5 * MINUTE) == []
    news = store.close_idle_sessions(T0 + 30_000 + 6 * MINUTE, idle_ms=5 * MINUTE)
    assert [(n.session_id, n.closed) for n in news] == [("s1", True)]
    s = store.exercise_session("rower-01", "s1")
    assert (s.closed_by, s.end_ts, s.reps) == ("idle", T0 + 30_000, 10)
    assert store.close_idle_sessions(T0 + 60 * MINUTE, idle_ms=5 * MINUTE) == []   # closed once


def test_a_new_session_on_the_machine_closes_the_one_left_open(store):
    store.commit_batch(workout(30)[:-1], [], T0 + 30_000)
    news = store.commit_batch([start(40, T0 + 5 * MINUTE, sid="s2")], [], T0 + 5 * MINUTE)
    assert sorted((n.session_id, n.closed) for n in news) == [("s1", True), ("s2", False)]
    assert store.exercise_session("rower-01", "s1").closed_by == "idle"
    assert store.exercise_session("rower-01", "s2").open


def test_a_late_end_after_an_idle_close_completes_the_session(store):
    store.commit_batch(workout(30)[:-1], [], T0 + 30_000)
    store.close_idle_sessions(T0 + 40 * MINUTE, idle_ms=5 * MINUTE)
    store.commit_batch([end(99, T0 + 31_000, elapsed_s=31, count=11)], [], T0 + 41 * MINUTE)
    s = store.exercise_session("rower-01", "s1")
    assert (s.closed_by, s.end_ts, s.elapsed_s, s.reps) == ("end", T0 + 31_000, 31, 11)


def test_a_session_is_claimed_once(store):
    code = store.commit_batch(workout(30), [], T0 + 40_000)[0].claim_code
    assert store.claim_session(code, "r-wang", T0 + 41_000)
    assert not store.claim_session(code, "r-li", T0 + 42_000)
    s = store.session_by_code(code)
    assert (s.resident_id, s.claimed_ms) == ("r-wang", T0 + 41_000)
    assert [x.session_id for x in store.sessions_of("r-wang")] == ["s1"] and store.sessions_of("r-li") == []


def test_sessions_are_read_back_by_time_and_machine(store):
    store.commit_batch(workout(30), [], T0 + 40_000)
    store.commit_batch([start(50, T0 + 10 * MINUTE, sid="s2"), reading(51, 1, 1, sid="s2", ts=T0 + 10 * MINUTE + 1000)],
                       [], T0 + 11 * MINUTE)
    assert [s.session_id for s in store.sessions_between(T0, T0 + 60 * MINUTE)] == ["s1", "s2"]
    assert [s.session_id for s in store.sessions_between(T0 + MINUTE, T0 + 60 * MINUTE)] == ["s2"]
    assert store.last_session_starts() == {"rower-01": T0 + 10 * MINUTE}


def test_a_typed_code_is_read_the_way_people_type_it():
    code = "0123456789"
    assert normalise_code(spaced(code)) == code
    assert normalise_code(" o1234 56789 ") == code           # lower case, spaces, O for 0
    assert normalise_code("ABCDEFGHJU") is None               # U is not in the alphabet
    assert normalise_code("0123") is None and normalise_code("") is None
