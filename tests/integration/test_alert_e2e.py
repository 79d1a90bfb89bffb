"""End to end: a watch's SOS through a real Mosquitto into the gateway process, out to the Twilio stand-in.

The gateway runs as `python -m eldercare run` so it can be killed with SIGKILL; the
stand-in (Prism behind a recording proxy) counts every request that left it.
"""
from __future__ import annotations

import socket
import threading
import time
import xml.etree.ElementTree as ET

import httpx

from devtools.localservices import free_port
from tests.fixtures.alert_e2e import DUTY_LINE, FAMILY, WATCH, creates, query, sections, signed_post, sos, start
from tests.fixtures.gateway_proc import wait_until


def test_sos_rings_the_duty_line_once_and_press_1_stops_the_escalation(gateway_process, mosquitto, twilio_standin):
    web_port = free_port()
    gateway, watch = start(gateway_process, mosquitto, sections(twilio_standin.base_url, web_port))
    now = int(time.time() * 1000)
    watch.publish(f"eldercare/watch/{WATCH}/sos", sos(1, now))
    watch.publish(f"eldercare/watch/{WATCH}/sos", sos(1, now))         # the same press redelivered
    watch.publish(f"eldercare/watch/{WATCH}/sos", sos(2, now + 4000))  # pressed again
    watch.wait_all()

    twilio_standin.wait_for(1, timeout_s=30)
    wait_until(lambda: len(query(gateway, "SELECT 1 FROM alert_events WHERE kind='repeated'")) == 1, 30,
               "the second press to be recorded on the open alert")
    alerts = query(gateway, "SELECT id, alert_type, severity, state FROM alerts")
    assert [(t, s, st) for _, t, s, st in alerts] == [("sos", "red", "open")]
    calls = creates(twilio_standin, "Calls")
    assert [c.field("To") for c in calls] == [DUTY_LINE]
    gather = ET.fromstring(calls[0].field("Twiml")).find("Gather")
    assert gather is not None and gather.get("numDigits") == "1"
    (attempt_id,) = query(gateway, "SELECT id FROM outbox WHERE channel='voice'")[0]
    assert gather.get("action") == f"http://127.0.0.1:{web_port}/twilio/gather/{attempt_id}"

    forged = httpx.post(f"http://127.0.0.1:{web_port}/twilio/gather/{attempt_id}", data={"Digits": "1"},
                        headers={"X-Twilio-Signature": "forged"}, timeout=10)
    assert forged.status_code == 403
    assert query(gateway, "SELECT state FROM alerts") == [("open",)]

    answer = signed_post(web_port, f"/twilio/gather/{attempt_id}", {"Digits": "1", "CallSid": "CA" + "a" * 32})
    assert answer.status_code == 200 and "<Say" in answer.text
    assert query(gateway, "SELECT state, escalation FROM alerts") == [("acknowledged", "stopped")]
    assert query(gateway, "SELECT actor FROM alert_events WHERE kind='acknowledged'") == [(DUTY_LINE,)]
    gateway.stop()
    assert len(creates(twilio_standin, "Calls")) == 1 and creates(twilio_standin, "Messages") == []


def test_kill_9_between_alert_and_dispatch_then_each_notification_goes_out_once(
        gateway_process, mosquitto, twilio_standin):
    """The alert and its first outbox row are committed while Twilio is unreachable; the process
    dies before anything is sent; after a restart every planned notification leaves exactly once."""
    web_port = free_port()
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, retried later
    # A 5 s retry delay leaves a wide window in which the row is durably pending and nothing is in flight.
    retry = {"base_delay_s": 5.0, "jitter": 0.0}
    gateway, watch = start(gateway_process, mosquitto, sections(unreachable, web_port, ack_deadline_red_s=3, retry=retry))
    watch.publish(f"eldercare/watch/{WATCH}/sos", sos(1, int(time.time() * 1000)))
    watch.wait_all()
    wait_until(lambda: query(gateway, "SELECT status, attempts FROM outbox") == [("pending", 1)], 30,
               "the first send to fail and wait for its retry")
    gateway.kill9()
    assert twilio_standin.requests == []

    gateway.reconfigure(sections(twilio_standin.base_url, web_port, ack_deadline_red_s=3))
    gateway.start()
    # Step 0 calls the duty line; nobody accepts within 3 s, so step 1 texts both family contacts.
    twilio_standin.wait_for(3, timeout_s=60)
    wait_until(lambda: len(query(gateway, "SELECT 1 FROM outbox WHERE status='sent'")) == 3, 30, "three sends")
    gateway.stop()
    assert [c.field("To") for c in creates(twilio_standin, "Calls")] == [DUTY_LINE]
    assert sorted(m.field("To") for m in creates(twilio_standin, "Messages")) == sorted(FAMILY)
    assert len(query(gateway, "SELECT 1 FROM alerts")) == 1


class _BlackHole:
    """A TCP server that reads requests and never answers: a send whose outcome stays unknown."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.received.append(conn.recv(65536))

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()


def test_a_send_cut_off_by_kill_9_is_settled_by_its_status_callback_without_a_resend(
        gateway_process, mosquitto, twilio_standin):
    """The callback comes before the gateway would ask Twilio's list (reconcile_after_s, long here);
    tests/integration/test_reconcile.py covers the lookup itself."""
    web_port = free_port()
    hole = _BlackHole()
    try:
        gateway, watch = start(gateway_process, mosquitto, sections(hole.url, web_port, reconcile_after_s=300,
                                                            unknown_outcome_window_s=600))
        watch.publish(f"eldercare/watch/{WATCH}/sos", sos(1, int(time.time() * 1000)))
        watch.wait_all()
        wait_until(lambda: any(b"Calls.json" in r for r in hole.received), 30, "the call request to leave")
        gateway.kill9()
    finally:
        hole.close()

    gateway.reconfigure(sections(twilio_standin.base_url, web_port))
    gateway.start()
    wait_until(lambda: query(gateway, "SELECT status FROM outbox") == [("unknown",)], 30,
               "the interrupted send to be marked unknown")
    (attempt_id,) = query(gateway, "SELECT id FROM outbox")[0]
    # Twilio did place the call: its status callback settles the attempt.
    answer = signed_post(web_port, f"/twilio/status/{attempt_id}", {"CallSid": "CA" + "b" * 32, "CallStatus": "ringing"})
    assert answer.status_code == 204
    assert query(gateway, "SELECT status, delivery, provider_id FROM outbox") == [("sent", "ringing", "CA" + "b" * 32)]
    gateway.stop()
    assert twilio_standin.requests == [], "a send with an unknown outcome was repeated"


def test_sos_still_rings_while_the_time_series_store_is_down(gateway_process, mosquitto, victoria, twilio_standin):
    gateway, watch = start(gateway_process, mosquitto, sections(twilio_standin.base_url, free_port()))
    victoria.stop()
    watch.publish(f"eldercare/watch/{WATCH}/sos", sos(1, int(time.time() * 1000)))
    watch.wait_all()
    twilio_standin.wait_for(1, timeout_s=30)
    assert [c.field("To") for c in creates(twilio_standin, "Calls")] == [DUTY_LINE]
    # The SOS point waited in the spool and reaches the store once it is back.
    victoria.start()
    assert victoria.wait_for_samples('{__name__="sos_seq"}', 1, timeout_s=60) == 1
    gateway.stop()
