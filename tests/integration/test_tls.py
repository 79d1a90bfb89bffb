"""Devices and the gateway over TLS against a real Mosquitto, with the listener options of the shipped mosquitto.conf."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import trustme

from device_sim.cli import main as device_sim
from device_sim.cli import run_start_ms
from device_sim.publisher import connect
from device_sim.scenario import load_scenario
from device_sim.stream import generate
from gateway.tls import TlsFiles
from tests.fixtures.gateway_proc import GatewayProcess, register, wait_until
from tests.fixtures.tls import write_client

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "sos_and_fall"  # two watches: SOS twice, a fall, a service call


def test_the_shipped_config_serves_plain_mqtt_on_loopback_only_and_requires_client_certificates_on_8883():
    lines = [line.strip() for line in (REPO / "mosquitto.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    listeners = [i for i, line in enumerate(lines) if line.startswith("listener ")]
    assert [lines[i] for i in listeners] == ["listener 1883 127.0.0.1", "listener 8883"]
    tls_block = lines[listeners[1] + 1:]
    assert "require_certificate true" in tls_block
    assert {line.split()[0] for line in tls_block} >= {"cafile", "certfile", "keyfile"}
    assert not any(re.match(r"(allow_anonymous true|use_identity_as_username)", line) for line in lines)


def test_a_simulated_fleet_publishes_over_tls_and_the_gateway_ingests_it_over_tls(tmp_path, tls_mosquitto, pki, victoria):
    broker = tls_mosquitto
    gw_tls = pki.client("gateway")
    gateway = GatewayProcess(tmp_path, broker, victoria, {"mqtt": {
        "port": broker.tls_port, "tls_ca_file": str(gw_tls.ca_file), "tls_cert_file": str(gw_tls.cert_file),
        "tls_key_file": str(gw_tls.key_file)}})
    scenario = load_scenario(SCENARIO)
    for device, kind in scenario.devices:
        register(gateway.store, device, kind=kind)
    gateway.start()
    try:
        credentials = tmp_path / "devices.json"
        credentials.write_text(json.dumps({d: broker.add_device(d).password for d, _ in scenario.devices}))
        device = pki.client("device-fleet")
        start_ms = run_start_ms(time.time(), scenario.duration_s, speed=0)  # ends now, as the CLI would place it
        assert device_sim(["run", "--scenario", SCENARIO, "--seed", "3", "--speed", "0", "--start-ms",
                           str(start_ms), "--port", str(broker.tls_port), "--credentials-file", str(credentials),
                           "--cafile", str(device.ca_file), "--cert", str(device.cert_file),
                           "--key", str(device.key_file)]) == 0
        expected = list(generate(scenario, 3, start_ms))
        wait_until(lambda: gateway.store.seen_count() >= len(expected), 30, "every message at the gateway")
        assert gateway.store.seen_count() == len(expected)
        assert gateway.store.dead_letter_counts() == {}
        assert gateway.store.last_state("watch-0001") is not None
    finally:
        gateway.stop()


def test_a_device_with_its_certificate_connects(tls_mosquitto, pki):
    client = connect("127.0.0.1", tls_mosquitto.tls_port, "watch-0001", tls_mosquitto.add_device("watch-0001"),
                     tls=pki.client("watch-0001"))
    client.disconnect()
    client.loop_stop()


def test_a_device_that_presents_no_certificate_is_refused(tls_mosquitto, pki):
    creds = tls_mosquitto.add_device("watch-0001")   # a right password is not enough
    with pytest.raises(ConnectionError, match="closed the connection before accepting it"):
        connect("127.0.0.1", tls_mosquitto.tls_port, "watch-0001", creds, tls=TlsFiles(pki.ca_file))


def test_a_device_whose_certificate_another_ca_signed_is_refused(tls_mosquitto, pki, tmp_path):
    creds = tls_mosquitto.add_device("watch-0001")
    impostor = write_client(trustme.CA(), tmp_path / "impostor", "watch-0001", trust=pki.ca_file)
    with pytest.raises(ConnectionError, match="closed the connection before accepting it"):
        connect("127.0.0.1", tls_mosquitto.tls_port, "watch-0001", creds, tls=impostor)


def test_a_device_does_not_talk_to_a_broker_whose_certificate_its_ca_did_not_sign(tls_mosquitto, pki, tmp_path):
    creds = tls_mosquitto.add_device("watch-0001")
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.crt"))
    mine = pki.client("watch-0001")
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        connect("127.0.0.1", tls_mosquitto.tls_port, "watch-0001", creds,
                tls=TlsFiles(tmp_path / "other-ca.crt", mine.cert_file, mine.key_file))


def test_a_device_with_a_certificate_but_a_wrong_password_is_refused(tls_mosquitto, pki):
    from gateway.broker_accounts import Credentials

    tls_mosquitto.add_device("watch-0001")
    with pytest.raises(ConnectionError, match="refused the connection"):
        connect("127.0.0.1", tls_mosquitto.tls_port, "watch-0001", Credentials("watch-0001", "not-its-password"),
                tls=pki.client("watch-0001"))


def test_the_plain_listener_still_serves_the_gateway_on_loopback(tls_mosquitto):
    client = connect("127.0.0.1", tls_mosquitto.port, "gw-plain", tls_mosquitto.gateway)
    client.disconnect()
    client.loop_stop()
