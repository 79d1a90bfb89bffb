"""The gateway process with `[store] url` set: an SOS over Mosquitto lands in PostgreSQL, no SQLite file is
made, and after kill -9 a redelivered press makes no second alert and no second notification."""
from __future__ import annotations

import time

import psycopg

from gateway.store import SCHEMA_VERSION as GATEWAY_SCHEMA
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
        ("alerts", 3), ("device_state", 2), ("gateway", GATEWAY_SCHEMA)]
    gateway.stop()
    watch.close()
    assert not (tmp_path / "gateway.db").exists() and not (tmp_path / "alerts.db").exists()


def test_after_kill_9_a_redelivered_sos_makes_no_second_alert_or_notification_in_postgresql(
        gateway_process, mosquitto, postgres_url):
    gateway = gateway_process({"store": {"url": postgres_url}})
    register(gateway.store, WATCH)
    gateway.start()
    watch = Publisher(mosquitto, mosquitto.add_device(WATCH), client_id=WATCH)
    now = int(time.time() * 1000)
    press = {"ts": now, "seq": 1, "lat": 31.2304, "lon": 121.4737}
    watch.publish(f"eldercare/watch/{WATCH}/sos", press)
    watch.wait_all()
    wait_until(lambda: rows(postgres_url, "SELECT 1 FROM outbox") != [], 30, "the SOS's first notification to be queued")
    assert rows(postgres_url, "SELECT id FROM alerts") == [(1,)]
    queued = rows(postgres_url, "SELECT alert_id, step, recipient FROM outbox ORDER BY id")

    gateway.kill9()
    gateway.start()
    watch.publish(f"eldercare/watch/{WATCH}/sos", press)   # a redelivery repeats ts, seq and payload
    # The critical lane is first in, first out: once this later key is stored, the redelivery was handled.
    watch.publish(f"eldercare/watch/{WATCH}/service_call", {"ts": now + 1, "seq": 2})
    watch.wait_all()
    wait_until(lambda: rows(postgres_url, f"SELECT 1 FROM seen WHERE seq = 2 AND device_id = '{WATCH}'") != [], 30,
               "the message after the redelivery to be stored")
    assert rows(postgres_url, "SELECT count(*) FROM alerts WHERE alert_type = 'sos'") == [(1,)]
    first_step = "SELECT alert_id, step, recipient FROM outbox WHERE step = '0' AND alert_id = 1 ORDER BY id"
    assert rows(postgres_url, first_step) == [r for r in queued if r[1] == "0"] != []
    gateway.stop()
    watch.close()
