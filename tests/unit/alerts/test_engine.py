"""The engine: alerts from findings, dedup, idempotent observe, escalation, all in one transaction."""
from __future__ import annotations

import os

import pytest

from alerts.lifecycle import TransitionError
from tests.unit.alert_support import DAUGHTER, DAY, DUTY, SON, FakeClock, make_service, msg

# Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_backend")


@pytest.fixture
def service(tmp_path):
    svc = make_service(tmp_path)
    yield svc
    svc.close()


def rows(svc, alert_id):
    return [(r.step, r.recipient, r.channel, r.status) for r in svc.engine.outbox.of_alert(alert_id)]


def test_sos_opens_a_red_alert_and_queues_the_first_step(service):
    service.observe([msg("w1", "sos", 1, DAY, lat=31.2, lon=121.4)], DAY)
    [alert] = service.alerts("open")
    assert (alert.alert_type, alert.severity, alert.resident_id) == ("sos", "red", "r-1")
    assert rows(service, alert.id) == [("0", DUTY["service_centre"], "voice", "pending")]


def test_repeat_press_joins_the_open_alert_and_refreshes_its_location(service):
    service.observe([msg("w1", "sos", 1, DAY, lat=31.2, lon=121.4)], DAY)
    service.observe([msg("w1", "sos", 2, DAY + 5000, lat=31.3, lon=121.5)], DAY + 5000)
    [alert] = service.alerts()
    assert (alert.lat, alert.lon) == (31.3, 121.5)
    assert [e.kind for e in service.events(alert.id)].count("repeated") == 1
    assert len(rows(service, alert.id)) == 1


def test_redelivered_message_creates_no_second_alert_or_outbox_row(service):
    m = msg("w1", "sos", 7, DAY, lat=31.2, lon=121.4)
    service.observe([m], DAY)
    service.observe([m], DAY + 1000)
    service.observe([m, m], DAY + 2000)
    [alert] = service.alerts()
    assert "repeated" not in [e.kind for e in service.events(alert.id)]
    assert len(rows(service, alert.id)) == 1


def test_a_batch_whose_slices_raise_several_times_waits_for_the_disk_once_before_observe_returns(
        service, store_backend, monkeypatch):
    press = msg("w1", "sos", 1, DAY, lat=31.2, lon=121.4)
    calm = [msg("w1", "health", seq, DAY + seq * 1000, heart_rate=70) for seq in range(2, 111)]
    again = msg("w1", "sos", 111, DAY + 111_000, lat=31.3, lon=121.5)   # in the third slice of fifty
    flushed: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        flushed.append(len(service.events(1)))   # what had been committed when the disk was waited for
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    service.observe([press, *calm, again], DAY + 111_000)
    [alert] = service.alerts()
    kinds = [e.kind for e in service.events(alert.id)]
    assert "opened" in kinds and "repeated" in kinds
    # SQLite: once, after both slices' transactions; PostgreSQL commits synchronously and has nothing to wait for.
    assert flushed == ([] if store_backend else [len(kinds)])


def test_idempotency_survives_a_restart(tmp_path):
    m = msg("w1", "sos", 7, DAY)
    first = make_service(tmp_path)
    first.observe([m], DAY)
    first.close()
    second = make_service(tmp_path)
    second.observe([m], DAY + 1000)
    [alert] = second.alerts()
    assert "repeated" not in [e.kind for e in second.events(alert.id)]
    second.close()


def test_failure_after_alert_insert_persists_nothing(service, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(service.engine.outbox, "add", boom)
    with pytest.raises(RuntimeError):
        service.observe([msg("w1", "sos", 1, DAY)], DAY)
    monkeypatch.undo()
    assert service.alerts() == []
    c = service.engine.db.conn
    assert c.execute("SELECT COUNT(*) FROM alert_events").fetchone()[0] == 0
    assert c.execute("SELECT COUNT(*) FROM processed").fetchone()[0] == 0
    # The redelivery after the failed attempt is handled normally.
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    assert len(service.alerts()) == 1


def test_deadline_moves_the_plan_to_the_next_step(service):
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    [alert] = service.alerts()
    service.tick(DAY + 59_999)
    assert {r[0] for r in rows(service, alert.id)} == {"0"}
    service.tick(DAY + 60_000)
    assert sorted(r[1] for r in rows(service, alert.id) if r[0] == "1") == sorted([DAUGHTER, SON])
    assert "escalated" in [e.kind for e in service.events(alert.id)]


def test_a_tick_takes_a_transaction_only_for_running_alerts_due_to_move_on(service, monkeypatch):
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    service.observe([msg("w1", "fall", 2, DAY + 30_000)], DAY + 30_000)
    sos, fall = sorted(service.alerts(), key=lambda a: a.opened_ms)
    reevaluated: list[int] = []
    real = service.engine.reevaluate
    monkeypatch.setattr(service.engine, "reevaluate", lambda alert_id, now: reevaluated.append(alert_id) or real(alert_id, now))
    service.tick(DAY + 60_000)                     # the press's deadline passed, the fall's not yet
    assert reevaluated == [sos.id]
    service.engine.db.conn.execute("UPDATE outbox SET status='failed' WHERE alert_id=?", (fall.id,))
    service.tick(DAY + 61_000)                     # every attempt of the fall's step failed: it moves on now
    assert reevaluated == [sos.id, fall.id]
    assert service.alert(fall.id).step == 1 and service.alert(sos.id).step == 1


def test_plan_runs_out_and_says_so(tmp_path):
    service = make_service(tmp_path, red_repeat_rounds=0)
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    for t in (60_000, 90_000, 120_000):
        service.tick(DAY + t)
    [alert] = service.alerts()
    assert alert.escalation == "exhausted" and alert.state == "open"
    assert {r[0] for r in rows(service, alert.id)} == {"0", "1", "2"}
    service.close()


def test_an_unaccepted_red_alert_goes_round_the_calls_again(tmp_path):
    service = make_service(tmp_path, red_repeat_rounds=2)
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    # plan: call duty (60 s), SMS family (30 s), call backup (30 s); then the two calls twice more, 60 s each
    t = DAY
    for wait_s in (60, 30, 30, 60, 60, 60, 60):
        t += wait_s * 1000
        service.tick(t)
    [alert] = service.alerts()
    calls = [(r[0], r[1]) for r in rows(service, alert.id) if r[2] == "voice"]
    duty, backup = DUTY["service_centre"], DUTY["backup_centre"]
    assert calls == [("0", duty), ("2", backup), ("3", duty), ("4", backup), ("5", duty), ("6", backup)]
    assert [r[0] for r in rows(service, alert.id) if r[2] == "sms"] == ["1", "1"]  # the family is texted once
    assert alert.escalation == "exhausted"
    service.close()


def test_an_orange_alert_ends_with_its_plan(tmp_path):
    service = make_service(tmp_path, red_repeat_rounds=2)
    service.observe([msg("w1", "health", n, DAY + n, heart_rate=150) for n in range(1, 4)], DAY)
    [alert] = service.alerts()
    assert alert.severity == "orange"
    t = DAY
    for wait_s in (180, 30, 30):
        t += wait_s * 1000
        service.tick(t)
    assert service.alerts()[0].escalation == "exhausted"
    assert {r[0] for r in rows(service, alert.id)} == {"0", "1", "2"}
    service.close()


def test_acknowledge_stops_escalation_and_cancels_unsent_steps(service):
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    [alert] = service.alerts()
    service.acknowledge(alert.id, "operator Chen", DAY + 10_000)
    service.tick(DAY + 600_000)
    assert [(r[0], r[3]) for r in rows(service, alert.id)] == [("0", "cancelled")]
    ev = [e for e in service.events(alert.id) if e.kind == "acknowledged"]
    assert ev[0].actor == "operator Chen" and ev[0].at_ms == DAY + 10_000


def test_resolving_sends_a_follow_up_to_everyone_who_got_the_alert_sms(service):
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    [alert] = service.alerts()
    service.tick(DAY + 60_000)
    service.clock.ms = DAY + 60_000
    service.dispatcher.run_once()
    service.resolve(alert.id, "operator Chen", DAY + 70_000)
    follow = sorted(r[1] for r in rows(service, alert.id) if r[0] == "resolved")
    assert follow == sorted([DAUGHTER, SON])
    with pytest.raises(TransitionError):
        service.resolve(alert.id, "operator Chen", DAY + 80_000)


def test_service_call_goes_to_the_service_desk_by_sms(service):
    service.observe([msg("w1", "service_call", 1, DAY)], DAY)
    [alert] = service.alerts()
    assert alert.severity == "yellow"
    assert rows(service, alert.id) == [("0", DUTY["service_desk"], "sms", "pending")]


def _stuck_counter(device_id: str, readings: int) -> list:
    """A machine reporting power while its count stands still: a broken sensor."""
    return [msg(device_id, "telemetry", seq, DAY + seq * 1000, session_id="s", elapsed_s=seq, count=7,
                energy_kcal=1.0, power_w=60) for seq in range(1, readings + 1)]


def test_equipment_faults_go_to_maintenance(service):
    service.observe(_stuck_counter("eq-9", 61), DAY + 61_000)
    [alert] = service.alerts()
    assert alert.alert_type == "equipment_fault" and alert.subject == "eq-9" and "stuck at 7" in alert.detail
    assert rows(service, alert.id) == [("0", DUTY["maintenance"], "sms", "pending")]


def test_a_session_that_never_ends_is_no_fault(service):
    start = msg("eq-9", "session", 1, DAY, event="start", session_id="s", equipment_type="rower")
    service.observe([start], DAY)
    service.tick(DAY + 3_600_000)
    assert service.alerts() == []


def test_overexertion_in_a_claimed_session_is_about_the_resident_who_claimed_it(service):
    service.observe([msg("eq-9", "session", 1, DAY, event="start", session_id="s", equipment_type="rower")], DAY)
    assert service.session_claimed("eq-9", "s", "r-1")
    assert not service.session_claimed("eq-9", "another", "r-1")
    # Wang Guilan is 80: 0.85 * 140 = 119, where the community's default age 70 would allow 127
    service.observe([msg("eq-9", "telemetry", 2, DAY + 1000, session_id="s", elapsed_s=1, count=1, energy_kcal=0.1,
                         heart_rate=122)], DAY + 1000)
    [alert] = service.alerts()
    assert alert.alert_type == "overexertion" and alert.resident_id == "r-1"


def test_listeners_hear_committed_events(service):
    heard = []
    service.listeners.append(heard.append)
    service.observe([msg("w1", "sos", 1, DAY)], DAY)
    assert [e.kind for e in heard] == ["opened", "notification_queued"]


def test_unknown_resident_gets_an_alert_keyed_by_device(tmp_path):
    svc = make_service(tmp_path, clock=FakeClock())
    svc.observe([msg("stranger", "sos", 1, DAY)], DAY)
    [alert] = svc.alerts()
    assert alert.subject == "stranger" and alert.resident_id is None
    svc.close()


def _overexert(device_id: str) -> list:
    return [msg(device_id, "telemetry", 1, DAY, session_id="s1", elapsed_s=60, count=30, energy_kcal=5.0, heart_rate=160)]


def test_overexertion_on_shared_equipment_calls_the_duty_line_not_maintenance(service):
    service.observe(_overexert("eq-park"), DAY)
    [alert] = service.alerts("open")
    assert (alert.alert_type, alert.subject, alert.resident_id) == ("overexertion", "eq-park", None)
    assert rows(service, alert.id) == [("0", DUTY["service_centre"], "voice", "pending")]


def test_overexertion_on_a_residents_own_machine_is_their_alert(service):
    service.observe(_overexert("eq-home"), DAY)
    [alert] = service.alerts("open")
    assert (alert.subject, alert.resident_id) == ("r-1", "r-1")


def test_a_silent_watch_raises_one_orange_alert_on_tick(service):
    service.observe([msg("w1", "status", 1, DAY, battery=80, worn=True)], DAY)
    service.tick(DAY + 60_000)
    assert service.alerts() == []
    service.tick(DAY + 16 * 60_000)
    service.tick(DAY + 17 * 60_000)
    [alert] = service.alerts("open")
    assert (alert.alert_type, alert.severity) == ("watch_silent", "orange")


def test_a_watch_heard_from_while_the_tick_scans_is_not_reported_silent(service, monkeypatch):
    import alerts.detection as detection_module

    service.observe([msg("w1", "status", 1, DAY, battery=80, worn=True)], DAY)
    real_tick = detection_module.watch_tick

    def scan_while_a_message_arrives(device_id, state, now_ms, ctx):
        result = real_tick(device_id, state, now_ms, ctx)
        service.observe([msg("w1", "status", 2, now_ms, battery=79, worn=True)], now_ms)  # the ingest thread
        return result

    monkeypatch.setattr(detection_module, "watch_tick", scan_while_a_message_arrives)
    service.tick(DAY + 16 * 60_000)
    assert service.alerts() == []


# -- a press is never silent ---------------------------------------------------------


def _press(svc, seq: int, at_ms: int, **pos) -> None:
    svc.observe([msg("w1", "sos", seq, at_ms, **pos)], at_ms)


def test_a_press_after_an_operator_acknowledged_reopens_the_alert_and_calls_the_duty_line(service):
    _press(service, 1, DAY)
    [alert] = service.alerts()
    service.acknowledge(alert.id, "operator Chen", DAY + 10_000)
    _press(service, 2, DAY + 120_000, lat=31.25, lon=121.48)
    [alert] = service.alerts()
    assert (alert.state, alert.escalation, alert.presses) == ("open", "running", 2)
    assert (alert.lat, alert.lon) == (31.25, 121.48)
    pending = [(r[1], r[2]) for r in rows(service, alert.id) if r[3] == "pending"]
    assert pending == [(DUTY["service_centre"], "voice")]
    assert "reopened" in [e.kind for e in service.events(alert.id)]


def test_a_press_after_a_called_person_pressed_1_calls_that_person_again_and_the_duty_line(service):
    _press(service, 1, DAY)
    [alert] = service.alerts()
    service.acknowledge(alert.id, DAUGHTER, DAY + 10_000)   # what pressing 1 on a call records
    _press(service, 2, DAY + 300_000)
    pending = sorted((r[1], r[2]) for r in rows(service, alert.id) if r[3] == "pending")
    assert pending == sorted([(DUTY["service_centre"], "voice"), (DAUGHTER, "voice")])


def test_presses_within_the_burst_window_after_acknowledgement_are_one_press(service):
    _press(service, 1, DAY)
    [alert] = service.alerts()
    service.acknowledge(alert.id, "operator Chen", DAY + 5_000)
    for seq, s in enumerate((10, 30, 59), start=2):
        _press(service, seq, DAY + s * 1000)
    [alert] = service.alerts()
    assert (alert.state, alert.presses) == ("acknowledged", 1)
    assert [e.kind for e in service.events(alert.id)].count("repeated") == 3  # every press is still on the record


def test_a_press_that_keeps_coming_every_half_minute_is_not_one_endless_burst(service):
    _press(service, 1, DAY)
    [alert] = service.alerts()
    service.acknowledge(alert.id, "operator Chen", DAY + 5_000)
    for seq, s in enumerate((30, 60), start=2):
        _press(service, seq, DAY + s * 1000)
    [alert] = service.alerts()
    assert alert.state == "open"  # 60 s after the press that began the burst: a new call for help


def test_a_press_after_the_plan_ran_out_starts_the_plan_again(tmp_path):
    service = make_service(tmp_path, red_repeat_rounds=0)
    _press(service, 1, DAY)
    for t in (60_000, 90_000, 120_000):
        service.tick(DAY + t)
    [alert] = service.alerts()
    assert alert.escalation == "exhausted"
    _press(service, 2, DAY + 200_000)
    [alert] = service.alerts()
    assert (alert.escalation, alert.plan_position, alert.step) == ("running", 0, 3)
    assert [(r[1], r[2]) for r in rows(service, alert.id) if r[0] == "3"] == [(DUTY["service_centre"], "voice")]
    service.tick(DAY + 260_000)  # and the restarted plan escalates as the plan does
    assert sorted(r[1] for r in rows(service, alert.id) if r[0] == "4") == sorted([DAUGHTER, SON])
    service.close()


def test_a_second_press_on_a_running_alert_only_joins_it(service):
    _press(service, 1, DAY)
    _press(service, 2, DAY + 120_000)
    [alert] = service.alerts()
    assert (alert.presses, alert.step) == (2, 0)
    assert len(rows(service, alert.id)) == 1


def test_a_rebooted_watch_whose_seq_starts_at_1_again_is_a_new_press(service):
    _press(service, 1, DAY)
    [alert] = service.alerts()
    service.acknowledge(alert.id, "operator Chen", DAY + 10_000)
    _press(service, 1, DAY + 600_000)   # same seq, newer device time: the watch restarted
    [alert] = service.alerts()
    assert (alert.state, alert.presses) == ("open", 2)


def test_an_sos_from_a_clock_far_ahead_still_raises_its_alert(service):
    ahead = msg("w1", "sos", 5, DAY + 3_600_000)
    service.observe_clock_skew([ahead], DAY)
    service.observe_clock_skew([ahead], DAY + 1000)  # redelivered: still one alert, one call
    [alert] = service.alerts()
    assert (alert.alert_type, alert.severity) == ("sos", "red")
    assert len(rows(service, alert.id)) == 1


def test_a_device_that_keeps_sending_from_a_clock_ahead_raises_one_maintenance_alert(service):
    for seq in range(1, 6):
        service.observe_clock_skew([msg("w1", "status", seq, DAY + 3_600_000 + seq, battery=80, worn=True)], DAY)
    [alert] = service.alerts()
    assert (alert.alert_type, alert.severity, alert.subject) == ("device_clock_wrong", "yellow", "w1")
    assert rows(service, alert.id) == [("0", DUTY["maintenance"], "sms", "pending")]


def test_an_orange_wander_still_outside_when_night_begins_calls_as_a_red_one(tmp_path):
    from tests.unit.alert_support import OUTSIDE, local_ms
    evening = local_ms(21, 40)
    service = make_service(tmp_path, clock=FakeClock(evening))
    for seq, s in enumerate((0, 130)):
        service.observe([msg("w1", "location", seq, evening + s * 1000, lat=OUTSIDE[0], lon=OUTSIDE[1], accuracy_m=10)],
                        evening + s * 1000)
    [alert] = service.alerts()
    assert alert.severity == "orange"
    service.acknowledge(alert.id, "operator Chen", evening + 200_000)
    service.tick(local_ms(22, 1))
    [alert] = service.alerts()
    assert (alert.severity, alert.state, alert.escalation) == ("red", "open", "running")
    assert DUTY["service_centre"] in [r[1] for r in rows(service, alert.id) if r[3] == "pending"]
    service.close()


# -- silence across restarts -------------------------------------------------------


def test_a_watch_silent_since_before_a_restart_is_reported_after_it(tmp_path):
    first = make_service(tmp_path)
    first.observe([msg("w1", "status", 1, DAY, battery=80, worn=True)], DAY)
    first.engine.save_states(DAY)
    first.close()
    restart = DAY + 800_000
    second = make_service(tmp_path, clock=FakeClock(restart))
    second.engine.restore([], restart)
    second.tick(restart + 119_000)   # silent 919 s > 900 s, but within the restart grace: the backlog may be draining
    assert second.alerts() == []
    second.tick(restart + 120_000)
    [alert] = second.alerts()
    assert alert.alert_type == "watch_silent"
    second.close()


def test_a_registered_watch_never_heard_since_start_is_reported(tmp_path):
    service = make_service(tmp_path)
    service.engine.restore([("w1", "watch"), ("eq-park", "equipment")], DAY)
    service.tick(DAY + 900_000)
    assert service.alerts() == []
    service.tick(DAY + 900_001)
    [alert] = service.alerts()
    assert alert.alert_type == "watch_silent" and "not heard" in alert.detail
    service.close()


def test_devices_given_to_start_are_restored_as_never_heard(tmp_path):
    service = make_service(tmp_path)
    service.start([("w1", "watch")])
    service.stop()
    service.tick(DAY + 900_001)
    [alert] = service.alerts()
    assert alert.alert_type == "watch_silent" and alert.device_id == "w1"
    service.close()


def test_prune_forgets_old_processed_keys_and_resolved_alerts_past_the_audit_retention(tmp_path):
    service = make_service(tmp_path, audit_retention_days=400, processed_window_h=24)
    _press(service, 1, DAY)
    [alert] = service.alerts()
    service.resolve(alert.id, "operator Chen", DAY + 1000)
    _press(service, 2, DAY + 2000)   # a new, open alert: never pruned
    removed = service.engine.prune(DAY + 399 * 86_400_000)
    assert (removed["alerts"], removed["processed"]) == (0, 2)
    removed = service.engine.prune(DAY + 401 * 86_400_000)
    assert removed["alerts"] == 1 and removed["alert_events"] > 0 and removed["outbox"] == 1
    assert [a.state for a in service.alerts()] == ["open"]
    service.close()


def test_a_watch_sending_only_from_a_clock_ahead_is_not_reported_silent(service):
    service.observe([msg("w1", "status", 1, DAY, battery=80, worn=True)], DAY)
    for minute in range(1, 20):
        now = DAY + minute * 60_000
        service.observe_clock_skew([msg("w1", "status", minute + 1, now + 8 * 3_600_000, battery=80, worn=True)], now)
        service.tick(now)
    assert [a.alert_type for a in service.alerts()] == ["device_clock_wrong"]


def test_a_machine_sending_impossible_readings_is_a_fault_for_maintenance_and_a_watch_or_stranger_is_not(tmp_path):
    from gateway.models import DeviceKind
    from gateway.observer import Refusal

    svc = make_service(tmp_path, clock=FakeClock())
    svc.observe([msg("eq-9", "session", 1, DAY, event="start", session_id="s", equipment_type="rower")], DAY)
    bad = Refusal("eq-9", DeviceKind.EQUIPMENT, "invalid_field", "field 'heart_rate': Input should be <= 250")
    for n in range(3):
        svc.observe_refused([bad, Refusal("w1", DeviceKind.WATCH, "invalid_field", "lat"),
                             Refusal("stranger", DeviceKind.EQUIPMENT, "invalid_field", "x")], DAY + n)
    [alert] = svc.alerts()
    assert alert.alert_type == "equipment_fault" and alert.subject == "eq-9" and "heart_rate" in alert.detail
    assert rows(svc, alert.id) == [("0", DUTY["maintenance"], "sms", "pending")]
    svc.close()
