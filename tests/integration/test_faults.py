"""Faults: every test ends with exactly-once in the stores (kill -9, store outage, broker restart)."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tests.fixtures.gateway_proc import GatewayProcess, Publisher, location, register, wait_until

DEVICES = [f"w-fault-{i}" for i in range(10)]


def _publish_locations(publisher: Publisher, count: int, base_ms: int, first_seq: int = 1) -> None:
    for n in range(count):
        device = DEVICES[n % len(DEVICES)]
        publisher.publish(f"eldercare/watch/{device}/location", location(first_seq + n // len(DEVICES), base_ms))


def _assert_exactly_once(gateway: GatewayProcess, victoria, count: int) -> None:
    """Every (device, seq) once in the operational store and once in the time-series store."""
    wait_until(lambda: gateway.store.seen_count() >= count, 120, f"{count} messages in the store")
    assert gateway.store.seen_count() == count
    assert victoria.wait_for_samples('{__name__="location_seq"}', count, timeout_s=60) == count
    per_device = count // len(DEVICES)
    for series in victoria.export('{__name__="location_seq"}'):
        assert sorted(series["values"]) == list(range(1, per_device + 1)), series["metric"]
    assert gateway.store.dead_letter_counts() == {}


def test_kill_9_with_5000_messages_in_flight_loses_and_doubles_nothing(gateway_process, mosquitto, victoria):
    gateway = gateway_process()
    register(gateway.store, *DEVICES)
    gateway.start()
    base = int(time.time() * 1000) - 600_000
    publisher = Publisher(mosquitto, mosquitto.gateway)
    _publish_locations(publisher, 5_000, base)
    # Kill once the gateway is part-way through: some batches handled, the rest in flight or queued.
    wait_until(lambda: gateway.store.seen_count() >= 500, 60, "the gateway to be part-way through")
    gateway.kill9()
    handled_before_kill = gateway.store.seen_count()
    publisher.wait_all()
    publisher.close()
    gateway.start()
    _assert_exactly_once(gateway, victoria, 5_000)
    gateway.stop()
    assert handled_before_kill < 5_000, "the kill came too late to test anything"


def _store_process(gateway: GatewayProcess) -> int:
    """The gateway's child that has the operational store's file open: its store process (once it has started)."""
    database = str(Path(gateway.settings["store"]["path"]).resolve())
    found: list[int] = []

    def has_open(pid: str) -> bool:
        with contextlib.suppress(OSError):   # a process that ends while we look has nothing open
            return any(os.path.realpath(fd) == database for fd in Path(f"/proc/{pid}/fd").iterdir())
        return False

    def children() -> list[str]:
        # Each thread lists the children it started: a replaced store process is its committing thread's.
        out: list[str] = []
        for task in Path(f"/proc/{gateway.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):   # a thread that ends while we look
                out += (task / "children").read_text().split()
        return out

    def opened() -> bool:
        found[:] = [int(pid) for pid in children() if has_open(pid)]
        return bool(found)

    wait_until(opened, 20, f"a child of the gateway to open {database}")
    return found[0]


def test_the_store_process_killed_mid_stream_is_replaced_and_loses_and_doubles_nothing(
        gateway_process, mosquitto, victoria):
    gateway = gateway_process()
    register(gateway.store, *DEVICES)
    gateway.start()
    store_process = _store_process(gateway)
    base = int(time.time() * 1000) - 600_000
    publisher = Publisher(mosquitto, mosquitto.gateway)
    _publish_locations(publisher, 5_000, base)
    wait_until(lambda: gateway.store.seen_count() >= 500, 60, "the gateway to be part-way through")
    os.kill(store_process, signal.SIGKILL)
    handled_before_kill = gateway.store.seen_count()
    publisher.wait_all()
    publisher.close()
    _assert_exactly_once(gateway, victoria, 5_000)
    assert _store_process(gateway) != store_process
    assert "store process ended (exit code -9); starting another" in gateway.log_file.read_text()
    gateway.stop()
    assert handled_before_kill < 5_000, "the kill came too late to test anything"


def test_store_outage_spools_to_disk_and_replays_everything(gateway_process, mosquitto, victoria):
    gateway = gateway_process()
    register(gateway.store, *DEVICES)
    gateway.start()
    victoria.stop()
    base = int(time.time() * 1000) - 600_000
    publisher = Publisher(mosquitto, mosquitto.gateway)
    _publish_locations(publisher, 1_000, base)
    publisher.wait_all()
    publisher.close()
    # Acknowledged while the store is down means: on disk in the spool.
    wait_until(lambda: gateway.store.seen_count() == 1_000, 60, "all 1,000 to be handled")
    assert any(gateway.spool_dir.glob("*.lp")), "nothing was spooled while the store was down"
    victoria.start()
    _assert_exactly_once(gateway, victoria, 1_000)
    wait_until(lambda: not any(gateway.spool_dir.glob("*.lp")), 60, "the spool to drain")
    gateway.stop()


def test_a_store_that_stops_answering_holds_no_acknowledgement_and_gets_everything_once_it_answers(
        gateway_process, mosquitto, victoria):
    """VictoriaMetrics frozen (SIGSTOP: connections open, no answer). Each batch waits `ack_wait_s` for it,
    then goes to the spool and is acknowledged; the replay, with the long `timeout_s`, delivers it later."""
    gateway = gateway_process({"sink": {"ack_wait_s": 0.3, "timeout_s": 120}})
    register(gateway.store, *DEVICES)
    gateway.start()
    base = int(time.time() * 1000) - 600_000
    publisher = Publisher(mosquitto, mosquitto.gateway)
    victoria.proc.send_signal(signal.SIGSTOP)
    try:
        _publish_locations(publisher, 1_000, base)
        publisher.wait_all()
        # Within 60 s, so not by waiting out the 120 s timeout: the store still has not answered.
        wait_until(lambda: gateway.store.seen_count() == 1_000, 60, "all 1,000 handled while the store is frozen")
        assert any(gateway.spool_dir.glob("*.lp")), "nothing was spooled while the store did not answer"
    finally:
        victoria.proc.send_signal(signal.SIGCONT)
    publisher.close()
    _assert_exactly_once(gateway, victoria, 1_000)
    wait_until(lambda: not any(gateway.spool_dir.glob("*.lp")), 60, "the spool to drain")
    gateway.stop()


def test_broker_restart_mid_stream_loses_nothing(gateway_process, mosquitto, victoria):
    gateway = gateway_process()
    register(gateway.store, *DEVICES)
    gateway.start()
    base = int(time.time() * 1000) - 600_000
    publisher = Publisher(mosquitto, mosquitto.gateway)
    _publish_locations(publisher, 1_500, base)
    publisher.wait_all()
    wait_until(lambda: gateway.store.seen_count() >= 200, 60, "the gateway to be part-way through")
    mosquitto.restart()
    wait_until(publisher.client.is_connected, 30, "the publisher to reconnect")
    _publish_locations(publisher, 1_500, base, first_seq=151)
    publisher.wait_all()
    publisher.close()
    _assert_exactly_once(gateway, victoria, 3_000)
    gateway.stop()
