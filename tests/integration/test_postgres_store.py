"""The gateway process with `[store] url` set: an SOS over Mosquitto lands in PostgreSQL, and no SQLite file is made."""
from __future__ import annotations

import time

import psycopg

from tests.fixtures.gateway_proc import Publisher, register, wait_until

WATCH = "watch-0001"   # worn by r-001 in examples/community.toml


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_an_sos_through_the_gateway_process_is_stored_with_its_outbox_row_in_postgresql(
        gateway_process, mosquitto, postgres_url, tmp_path):
    gateway = gateway_process({"store": {"url": postgres_url}})
    register(gateway.store, WATCH)
    gateway.start()
    watch = Publisher(mosquitto, mosquitto.add_device(WATCH), client_id=WATCH)
    now = int(time.time() * 1000)
    watch.publish(f"eldercare/watch/{WATCH}/sos", {"ts": now, "seq": 1, "lat": 31.2304, "lon": 121.4737})
    watch.wait_all()

    wait_until(lambda: rows(postgres_url, "SELECT 1 FROM outbox") != [], 30, "the SOS's first notification to be queued")
    assert rows(postgres_url, "SELECT alert_type, severity, device_id FROM alerts") == [("sos", "red", WATCH)]
    assert rows(postgres_url, "SELECT device_id, ts, seq FROM processed") == [(WATCH, now, 1)]
    wait_until(lambda: rows(postgres_url, "SELECT device_id, ts, seq FROM seen") == [(WATCH, now, 1)], 10,
               "the gateway store to record the message")
    assert sorted(rows(postgres_url, "SELECT component, version FROM schema_version")) == [
        ("alerts", 3), ("device_state", 1), ("gateway", 2)]
    gateway.stop()
    watch.close()
    assert not (tmp_path / "gateway.db").exists() and not (tmp_path / "alerts.db").exists()
