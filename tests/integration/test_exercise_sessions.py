"""Exercise sessions through the real broker, gateway process and VictoriaMetrics: a gateway killed with
kill -9 mid-session and a machine rebooting mid-session still give one session with the right totals;
the machine hears its claim code on `cmd`; the time-series store's series stay bounded however many
sessions there are."""
from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from gateway.models import DeviceKind
from tests.fixtures.gateway_proc import Publisher, connected_client, register, subscribe, wait_until

MACHINE = "rower-07"


def machine_display(broker, credentials, machine: str) -> tuple[object, list[dict]]:
    """The machine's screen: a client on its own account that keeps every command the gateway sends it."""
    heard: list[dict] = []
    display = connected_client(broker, credentials, f"{machine}-display",
                               on_message=lambda c, u, m: heard.append(json.loads(m.payload)))
    subscribe(display, f"eldercare/equipment/{machine}/cmd")
    return display, heard


def session_stream(sid: str, t0: int, seconds: int, first_seq: int = 1, reboot_at: int | None = None,
                   end: bool = True) -> list[tuple[str, dict]]:
    """start, a reading a second (a stroke every 2 s), end with the machine's own totals. At `reboot_at`
    the machine loses power: it keeps the session id, counts from 0 again and numbers messages from 1."""
    seq, base_s = first_seq, 0
    out: list[tuple[str, dict]] = [("session", {"ts": t0, "seq": seq, "event": "start", "session_id": sid,
                                                "equipment_type": "rower"})]
    for s in range(1, seconds + 1):
        if s == reboot_at:
            seq, base_s = 0, s - 1
        seq += 1
        own = s - base_s
        out.append(("telemetry", {"ts": t0 + s * 1000, "seq": seq, "session_id": sid, "elapsed_s": own,
                                  "count": own // 2, "distance_m": own // 2 * 5.0, "energy_kcal": round(own * 0.1, 2),
                                  "heart_rate": 95, "power_w": 60}))
    if end:
        own = seconds - base_s
        out.append(("session", {"ts": t0 + (seconds + 1) * 1000, "seq": seq + 1, "event": "end", "session_id": sid,
                                "equipment_type": "rower", "elapsed_s": own, "count": own // 2,
                                "distance_m": own // 2 * 5.0, "energy_kcal": round(own * 0.1, 2)}))
    return out


def test_a_gateway_killed_mid_session_and_a_machine_rebooting_mid_session_give_one_right_session(
        gateway_process, mosquitto):
    gateway = gateway_process({"exercise": {"claim_url": "https://gw.example.test/c/"}})
    register(gateway.store, MACHINE, kind=DeviceKind.EQUIPMENT)
    device = mosquitto.add_device(MACHINE)
    display, heard = machine_display(mosquitto, device, MACHINE)
    gateway.start()

    t0 = int(time.time() * 1000) - 900_000
    stream = session_stream("s-0001", t0, 600, reboot_at=400)
    pub = Publisher(mosquitto, device, client_id=MACHINE)
    for stream_name, body in stream[:250]:
        pub.publish(f"eldercare/equipment/{MACHINE}/{stream_name}", body)
    pub.wait_all()
    wait_until(lambda: (s := gateway.store.exercise_session(MACHINE, "s-0001")) is not None and s.elapsed_s >= 50,
               60, "the session to be part-way in")
    gateway.kill9()
    for stream_name, body in stream[250:450]:         # published while the gateway is down
        pub.publish(f"eldercare/equipment/{MACHINE}/{stream_name}", body)
    pub.wait_all()
    gateway.start()
    for stream_name, body in stream[450:]:
        pub.publish(f"eldercare/equipment/{MACHINE}/{stream_name}", body)
    pub.wait_all()
    pub.close()

    wait_until(lambda: gateway.store.exercise_session(MACHINE, "s-0001").closed_by == "end", 60, "the session to end")
    s = gateway.store.exercise_session(MACHINE, "s-0001")
    # 399 s and 199 strokes before the power cut, 201 s and 100 strokes after it: nothing lost, nothing twice.
    assert (s.elapsed_s, s.reps, s.distance_m) == (600, 299, 1495.0)
    assert s.energy_kcal == round(39.9 + 20.1, 2) and s.hr_avg == 95 and s.power_avg == 60
    assert gateway.store.seen_count() == len(stream)

    # The machine was told its code when the session opened, and again (with its expiry) when it closed.
    wait_until(lambda: any(n["state"] == "closed" for n in heard), 30, "the closing notice on cmd")
    opened = [n for n in heard if n["state"] == "open"]
    closed = [n for n in heard if n["state"] == "closed"]
    assert len(closed) == 1 and opened and {n["code"] for n in heard} == {f"{s.claim_code[:5]}-{s.claim_code[5:]}"}
    assert closed[0]["url"] == f"https://gw.example.test/c/{s.claim_code}" and closed[0]["expires_ts"] > time.time() * 1000
    display.loop_stop()
    display.disconnect()
    gateway.stop()


def _series(victoria, match: str) -> list[dict]:
    victoria.flush()
    query = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(f"{victoria.url}/api/v1/series?{query}", timeout=30) as resp:
        return json.loads(resp.read())["data"]


def test_series_stay_bounded_whatever_the_number_of_sessions(gateway_in_process, mosquitto, victoria):
    register(gateway_in_process.store, MACHINE, kind=DeviceKind.EQUIPMENT)
    pub = Publisher(mosquitto, mosquitto.add_device(MACHINE), client_id=MACHINE)
    t0 = int(time.time() * 1000) - 3_600_000
    seq = 0
    counts = []
    for n in range(1, 51):
        stream = session_stream(f"s-{n:04d}", t0 + n * 60_000, 5, first_seq=seq + 1)
        seq = stream[-1][1]["seq"]
        for stream_name, body in stream:
            pub.publish(f"eldercare/equipment/{MACHINE}/{stream_name}", body)
        if n in (5, 50):
            pub.wait_all()
            wait_until(lambda n=n: gateway_in_process.store.exercise_session(MACHINE, f"s-{n:04d}") is not None
                       and gateway_in_process.store.exercise_session(MACHINE, f"s-{n:04d}").closed_by == "end",
                       60, f"session {n} in the store")
            wait_until(lambda n=n: victoria.sample_count('{__name__="telemetry_count"}') >= 5 * n, 60, "the points")
            counts.append(len(_series(victoria, f'{{device_id="{MACHINE}"}}')))
    pub.close()
    assert counts[0] == counts[1], f"series grew with the sessions: {counts}"
    assert counts[1] <= 20
    assert not any("session_id" in s for s in _series(victoria, f'{{device_id="{MACHINE}"}}'))
    assert len(gateway_in_process.store.sessions_between(0, 2**62)) == 50
    assert victoria.sample_count('{__name__="telemetry_count"}') == 250


