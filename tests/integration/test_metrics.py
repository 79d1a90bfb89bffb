"""After a scripted run through Mosquitto and the gateway process, /metrics counts exactly what was published,
refused and repeated, and /ready says the instance is active with its broker and store."""
from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devtools.localservices import free_port
from tests.fixtures.gateway_proc import Publisher, location, register, wait_until

DEVICES = ("w-metrics-1", "w-metrics-2", "w-metrics-3")
VALID_PER_DEVICE = 10


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(got, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in got.items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_count_what_a_scripted_run_published_refused_and_repeated(gateway_process, mosquitto):
    port = free_port()
    gateway = gateway_process({"web": {"enabled": True, "port": port}})
    register(gateway.store, *DEVICES)
    gateway.start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 200, 30, "the gateway to be ready")
    assert httpx.get(f"{base}/ready", timeout=5).json() == {"status": "active", "broker": True, "store": True}

    now = int(time.time() * 1000) - 60_000
    pub = Publisher(mosquitto, mosquitto.gateway)
    for device in DEVICES:
        for seq in range(1, VALID_PER_DEVICE + 1):
            pub.publish(f"eldercare/watch/{device}/location", location(seq, now))
    for seq in (1, 2):   # redeliveries: the same ts, seq and payload again
        pub.publish(f"eldercare/watch/{DEVICES[0]}/location", location(seq, now))
    pub.publish(f"eldercare/watch/{DEVICES[1]}/sos", {"ts": now + 100, "seq": 100, "lat": 31.23, "lon": 121.47})
    pub.publish(f"eldercare/watch/{DEVICES[2]}/health", b"{not json")
    pub.publish(f"eldercare/watch/{DEVICES[2]}/toaster", {"ts": now, "seq": 101})
    pub.publish("eldercare/watch/w-stranger/location", location(1, now))
    pub.wait_all()
    pub.close()

    accepted = len(DEVICES) * VALID_PER_DEVICE + 1
    wait_until(lambda: total(scrape(base), "eldercare_messages_total", outcome="accepted") >= accepted
               and total(scrape(base), "eldercare_dead_letters_total") >= 3, 30, "ingest to finish")
    got = scrape(base)
    assert total(got, "eldercare_messages_total", outcome="accepted") == accepted
    assert total(got, "eldercare_messages_total", outcome="duplicates") == 2
    assert total(got, "eldercare_messages_total", lane="critical", outcome="accepted") == 1   # the SOS
    assert {reason: total(got, "eldercare_dead_letters_total", reason=reason)
            for reason in ("bad_json", "unknown_stream", "unknown_device")} == {
        "bad_json": 1, "unknown_stream": 1, "unknown_device": 1}
    assert total(got, "eldercare_dead_letters_total") == 3
    assert got[("eldercare_open_alerts", (("severity", "red"),))] == 1
    assert got[("eldercare_active", ())] == 1
    assert total(got, "eldercare_broker_connected") == 2 and got[("eldercare_store_up", ())] == 1

    # The SOS's first call went out through the dry-run notifier: one row, one timed send, one dispatch delay.
    wait_until(lambda: total(scrape(base), "eldercare_notification_send_seconds_count", outcome="sent") >= 1, 30,
               "the first call")
    got = scrape(base)
    assert total(got, "eldercare_outbox_rows", channel="voice") == 1
    assert total(got, "eldercare_dispatch_delay_seconds_count", channel="voice") == 1
    assert total(got, "eldercare_ingest_batch_messages_count") >= 1
