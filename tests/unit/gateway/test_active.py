"""The active role against a real PostgreSQL: one holder, a standby that takes over, and fencing."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from gateway.active import ActiveLock, Fenced
from gateway.models import DeviceKind
from gateway.store import OperationalStore
from tests.unit.alert_support import DAY, msg


def a_lock(url: str, lost: list[str]) -> ActiveLock:
    return ActiveLock(url, on_lost=lost.append, poll_s=0.05)


def stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


def test_one_holds_the_role_the_other_waits_and_takes_over_when_it_is_released(postgres_url):
    lost: list[str] = []
    first, second = a_lock(postgres_url, lost), a_lock(postgres_url, lost)
    assert first.wait(threading.Event())
    assert not second.wait(stop_after(0.5))   # standby: the role is taken
    first.release()
    assert second.wait(stop_after(5))
    second.release()
    assert lost == []


def test_the_standby_takes_over_when_the_active_s_session_dies(postgres_url):
    lost: list[str] = []
    first, second = a_lock(postgres_url, lost), a_lock(postgres_url, lost)
    assert first.wait(threading.Event())
    with psycopg.connect(postgres_url, autocommit=True) as admin:   # as when the active's host dies
        admin.execute("SELECT pg_terminate_backend(%s)", (first.backend_pid,))
    started = time.monotonic()
    assert second.wait(stop_after(10))
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:   # the old active's watchdog notices within a second or two
        time.sleep(0.05)
    assert len(lost) == 1 and "stopped answering" in lost[0]
    second.release()


def test_an_active_that_lost_the_role_commits_nothing(postgres_url):
    lost: list[str] = []
    lock = a_lock(postgres_url, lost)
    assert lock.wait(threading.Event())
    store = OperationalStore(postgres_url)
    store.register_device("w1", DeviceKind.WATCH, 0)
    store.fence = lock.check
    store.commit_batch([msg("w1", "health", 1, DAY, heart_rate=70)], [], DAY)   # while it holds the role
    assert store.seen_count() == 1

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (lock.backend_pid,))
    taker = a_lock(postgres_url, [])
    assert taker.wait(stop_after(5))   # the other process is active now
    with pytest.raises(Fenced):
        store.commit_batch([msg("w1", "health", 2, DAY + 1, heart_rate=71)], [], DAY + 1)
    assert store.seen_count() == 1 and lost   # nothing written, and the process was told
    taker.release()
    lock.release()
    store.close()


def test_two_deployments_in_two_schemas_of_one_database_each_have_their_own_active(postgres_url):
    other = postgres_url.replace("search_path%3Dtest_", "search_path%3Dother_")
    schema = other.split("search_path%3D")[1]
    with psycopg.connect(postgres_url.split("?")[0], autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    first, second = a_lock(postgres_url, []), a_lock(other, [])
    assert first.wait(threading.Event()) and second.wait(stop_after(2))
    assert first.lock_id != second.lock_id
    first.release()
    second.release()
