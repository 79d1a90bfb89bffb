"""What the gateway promises about an SOS, through the real path: a watch publishing to Mosquitto, the
gateway as its own process, and the calls that reach the Twilio stand-in (Prism with Twilio's spec)."""
from __future__ import annotations

import time

from alerts.config import AlertSettings
from devtools.localservices import free_port
from gateway.store import OperationalStore
from tests.fixtures.alert_e2e import DUTY_LINE, WATCH, creates, query, sections, signed_post, sos, start
from tests.fixtures.gateway_proc import register, wait_until

SOS_TOPIC = f"eldercare/watch/{WATCH}/sos"


def _press_1(gateway, web_port: int, call_number: int) -> None:
    """The duty line answers call number `call_number` (1-based, in outbox order) and presses 1."""
    ids = [r[0] for r in query(gateway, "SELECT id FROM outbox WHERE channel='voice' ORDER BY id")]
    answer = signed_post(web_port, f"/twilio/gather/{ids[call_number - 1]}", {"Digits": "1", "CallSid": "CA" + "c" * 32})
    assert answer.status_code == 200
    wait_until(lambda: query(gateway, "SELECT state FROM alerts") == [("acknowledged",)], 10, "the alert to be accepted")


def test_a_press_after_acknowledgement_rings_the_duty_line_again(gateway_process, mosquitto, twilio_standin):
    web_port = free_port()
    gateway, watch = start(gateway_process, mosquitto, sections(twilio_standin.base_url, web_port))
    now = int(time.time() * 1000)
    watch.publish(SOS_TOPIC, sos(1, now))
    watch.wait_all()
    twilio_standin.wait_for(1, timeout_s=30)
    _press_1(gateway, web_port, 1)

    watch.publish(SOS_TOPIC, sos(2, now + 20_000))    # within the burst: the same call for help
    watch.publish(SOS_TOPIC, sos(3, now + 90_000))    # later: she needs help again
    watch.wait_all()
    wait_until(lambda: len(creates(twilio_standin, "Calls")) == 2, 30, "a second call to the duty line")
    assert query(gateway, "SELECT state, presses FROM alerts") == [("open", 2)]
    gateway.stop()
    assert [c.field("To") for c in creates(twilio_standin, "Calls")] == [DUTY_LINE, DUTY_LINE]
    kinds = [k for (k,) in query(gateway, "SELECT kind FROM alert_events ORDER BY id")]
    assert kinds.count("repeated") == 2 and "reopened" in kinds


def test_an_sos_from_a_rebooted_watch_counting_seq_from_1_again_rings(gateway_process, mosquitto, twilio_standin):
    web_port = free_port()
    gateway, watch = start(gateway_process, mosquitto, sections(twilio_standin.base_url, web_port))
    now = int(time.time() * 1000)
    watch.publish(SOS_TOPIC, sos(1, now - 600_000))   # pressed ten minutes ago
    watch.wait_all()
    twilio_standin.wait_for(1, timeout_s=30)
    _press_1(gateway, web_port, 1)

    watch.publish(SOS_TOPIC, sos(1, now - 600_000))   # the broker redelivers the old press: nothing new
    watch.publish(SOS_TOPIC, sos(1, now))             # battery out and back in: seq starts at 1 again
    watch.wait_all()
    wait_until(lambda: len(creates(twilio_standin, "Calls")) == 2, 30, "the rebooted watch's SOS to ring")
    gateway.stop()
    assert query(gateway, "SELECT presses FROM alerts") == [(2,)]
    assert gateway.store.seen_count() == 2


def test_an_sos_from_a_watch_whose_clock_is_an_hour_ahead_rings_and_is_dead_lettered(
        gateway_process, mosquitto, twilio_standin):
    gateway, watch = start(gateway_process, mosquitto, sections(twilio_standin.base_url, free_port()))
    watch.publish(SOS_TOPIC, sos(1, int(time.time() * 1000) + 3_600_000))
    watch.wait_all()
    twilio_standin.wait_for(1, timeout_s=30)
    assert [c.field("To") for c in creates(twilio_standin, "Calls")] == [DUTY_LINE]
    wait_until(lambda: gateway.store.dead_letter_counts() == {"ts_in_future": 1}, 10, "the message to be dead-lettered")
    gateway.stop()
    assert gateway.store.last_state(WATCH) is None   # its time never reached the stored state


def test_a_watch_silent_across_a_kill_9_and_one_never_heard_are_both_reported(gateway_process, mosquitto, twilio_standin):
    web_port = free_port()
    quick = {"watch_silent_s": 6, "restart_grace_s": 1, "state_save_interval_s": 0.2}
    gateway, watch = start(gateway_process, mosquitto, sections(twilio_standin.base_url, web_port, **quick))
    watch.publish(f"eldercare/watch/{WATCH}/status", {"ts": int(time.time() * 1000), "seq": 1, "battery": 80, "worn": True})
    watch.wait_all()
    states = str(AlertSettings(db_path=gateway.settings["alerts"]["db_path"]).device_state_path)
    wait_until(lambda: query(gateway, "SELECT device_id FROM device_state", db_file=states) == [(WATCH,)], 10,
               "the watch's last-heard time to be saved")
    gateway.kill9()
    assert query(gateway, "SELECT 1 FROM alerts") == []
    register(OperationalStore(gateway.store.target), "watch-0002")   # registered, never heard from

    gateway.start()
    wait_until(lambda: len(query(gateway, "SELECT 1 FROM alerts WHERE alert_type='watch_silent'")) == 2, 30,
               "both watches to be reported silent")
    details = sorted(d for (d,) in query(gateway, "SELECT detail FROM alerts"))
    assert details == ["no message from a worn watch", "not heard from since the gateway started"]
    twilio_standin.wait_for(2, timeout_s=30)
    gateway.stop()
    # Mrs Wang's plan calls the duty line first; Mr Li's (watch-0002) texts his daughter first.
    assert [c.field("To") for c in creates(twilio_standin, "Calls")] == [DUTY_LINE]
    assert [m.field("To") for m in creates(twilio_standin, "Messages")] == ["+15555550121"]
