"""Community usage, the pure part: local hours and weekdays, the window, idle machines, machines in trouble,
residents week on week, and the CSV export."""
from __future__ import annotations

import csv
from datetime import datetime
from zoneinfo import ZoneInfo

from alerts.lifecycle import Alert
from alerts.vocabulary import AlertState, AlertType, Severity
from dashboards.usage import csv_lines, periods, summarise
from gateway.exercise_store import ExerciseSession

SHANGHAI = "Asia/Shanghai"
HOUR, DAY = 3_600_000, 86_400_000


def at(day: int, hour: int, minute: int = 0, tz: str = SHANGHAI, month: int = 11) -> int:
    return int(datetime(2026, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


NOW = at(25, 15)   # Wednesday 25 November 2026, 15:00 in Shanghai


def session(start: int, device_id: str = "rower-01", *, resident: str | None = None, minutes: int = 10,
            kind: str | None = "rower", sid: str = "s") -> ExerciseSession:
    end = start + minutes * 60_000
    return ExerciseSession(device_id, f"{sid}-{start}", kind, start, end, end, "end", end, minutes * 60, minutes * 20,
                           minutes * 100.0, minutes * 5.0, 98.5, 131, 72.0, end, "0123456789", resident,
                           end if resident else None)


def usage(sessions, *, machines=None, last_starts=None, alerts=(), residents=None, now=NOW, tz=SHANGHAI, weeks=4,
          idle_days=3):
    if last_starts is None:
        last_starts = {}
        for s in sessions:
            last_starts[s.device_id] = max(last_starts.get(s.device_id, 0), s.start_ts)
    return summarise(sorted(sessions, key=lambda s: s.start_ts), machines=machines or {}, last_starts=last_starts,
                     alerts=alerts, residents=residents or {}, now_ms=now, tz=tz, weeks=weeks, idle_days=idle_days)


def cells(u) -> dict[tuple[int, int], int]:
    return {(d, h): n for d, row in enumerate(u.heat) for h, n in enumerate(row) if n}


def test_a_session_counts_in_the_local_hour_and_weekday_it_started():
    tuesday_morning = at(24, 7, 30)   # Monday 23:30 in UTC
    u = usage([session(tuesday_morning), session(tuesday_morning + 20 * 60_000), session(at(22, 18))])
    assert cells(u) == {(1, 7): 2, (6, 18): 1}   # Tuesday 07:00 twice, Sunday 18:00 once
    assert u.sessions == 3


def test_hours_follow_summer_time_in_a_zone_that_has_it():
    berlin = "Europe/Berlin"   # on Sunday 29 March 2026 clocks go from 02:00 to 03:00
    before = int(datetime(2026, 3, 29, 0, 30, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    after = before + HOUR
    u = usage([session(before), session(after)], now=at(1, 12, tz=berlin, month=4), tz=berlin, weeks=1)
    assert cells(u) == {(6, 1): 1, (6, 3): 1}   # 01:30 CET, then 03:30 CEST
    window = u.periods.window
    assert window.until_ms - window.since_ms == 7 * DAY - HOUR   # whole local days, one of them 23 h long


def test_the_window_is_whole_local_days_ending_today():
    p = periods(NOW, SHANGHAI, 1).window
    assert (p.since_ms, p.until_ms) == (at(19, 0), at(26, 0))   # Thursday to Wednesday, today included
    u = usage([session(at(18, 23, 50)), session(at(19, 0, 10)), session(NOW - HOUR)], weeks=1)
    assert u.sessions == 2 and cells(u) == {(3, 0): 1, (2, 14): 1}


def test_machines_with_no_session_for_the_idle_days_include_those_never_used():
    u = usage([], machines={"rower-01": "Rower by the east gate", "walker-01": "", "twister-01": "Twister by the pond"},
              last_starts={"rower-01": NOW - DAY, "walker-01": NOW - 5 * DAY, "ab-01": NOW - 10 * DAY}, idle_days=3)
    assert [(m.device_id, m.name, m.last_start_ms) for m in u.idle] == [
        ("twister-01", "Twister by the pond", None),   # never used: first
        ("ab-01", "ab-01", NOW - 10 * DAY),            # not in the community file: named by its id
        ("walker-01", "walker-01", NOW - 5 * DAY)]     # no name in the file: its id too


def test_a_machine_is_idle_from_exactly_the_idle_days_after_its_last_session():
    def idle(last: int) -> bool:
        return usage([], machines={"rower-01": ""}, last_starts={"rower-01": last}, idle_days=3).idle != ()
    assert idle(NOW - 3 * DAY) and not idle(NOW - 3 * DAY + 1)


def test_each_machine_has_its_sessions_active_time_and_type_busiest_first():
    u = usage([session(NOW - DAY, "walker-01", kind="walker", minutes=30),
               session(NOW - 2 * DAY, "rower-01"), session(NOW - 3 * DAY, "rower-01", minutes=5),
               session(NOW - 60 * DAY, "twister-01", kind="waist_twister")],
              machines={"rower-01": "Rower by the east gate", "walker-01": "Walker", "twister-01": "Twister"})
    assert [(m.name, m.equipment_type, m.sessions, m.active_s) for m in u.machines] == [
        ("Rower by the east gate", "rower", 2, 900), ("Walker", "walker", 1, 1800), ("Twister", None, 0, 0)]
    assert u.machines[-1].last_start_ms == NOW - 60 * DAY   # used long ago: not in the window, but not "never"


def test_residents_are_counted_by_local_iso_week_this_week_against_last():
    sessions = [
        session(at(23, 0, 30), resident="r-1"),   # Monday 00:30 here, still Sunday in UTC: this week
        session(at(24, 9), resident="r-1"),
        session(at(24, 10)),                       # nobody claimed it
        session(at(22, 23, 30), resident="r-2"),  # Sunday night: last week
        session(at(16, 8), resident="r-1"),       # last week's Monday
        session(at(15, 8), resident="r-3"),       # the week before: neither
    ]
    u = usage(sessions, residents={"r-1": "Wang Guilan"}, weeks=1)   # reaches back past the 1-week window
    assert [(r.name, r.this_week, r.last_week) for r in u.residents] == [("Wang Guilan", 2, 1), ("r-2", 0, 1)]
    assert (u.active_this_week, u.active_last_week) == (1, 2)
    assert periods(NOW, SHANGHAI, 1).read.since_ms == at(16, 0)


def _alert(alert_id: int, alert_type: AlertType, device_id: str, opened: int, detail: str = "") -> Alert:
    return Alert(alert_id, device_id, alert_type, Severity.YELLOW, AlertState.OPEN, None, device_id, opened, opened,
                 None, None, detail)


def test_machines_reporting_faults_or_silent_are_listed_oldest_first_with_their_alert():
    alerts = [_alert(1, AlertType.SOS, "w1", NOW - HOUR),
              _alert(3, AlertType.EQUIPMENT_FAULT, "rower-01", NOW - HOUR, "session s1 stopped reporting"),
              _alert(7, AlertType.EQUIPMENT_SILENT, "walker-01", NOW - DAY, "no message")]
    u = usage([], machines={"rower-01": "Rower by the east gate"}, alerts=alerts)
    assert [(t.alert_id, t.name, t.what, t.detail) for t in u.troubles] == [
        (7, "walker-01", "fitness equipment silent", "no message"),
        (3, "Rower by the east gate", "fitness equipment fault", "session s1 stopped reporting")]


def test_no_session_yet_is_told_apart_from_none_in_the_window():
    assert not usage([], machines={"rower-01": ""}).ever_used
    old = usage([], machines={"rower-01": ""}, last_starts={"rower-01": NOW - 90 * DAY})
    assert old.ever_used and old.sessions == 0


def _read_csv(lines) -> list[list[str]]:
    text = "".join(lines)
    assert text.startswith("\ufeff")   # Excel then reads it as UTF-8
    return list(csv.reader(text.removeprefix("\ufeff").splitlines()))


def test_the_csv_has_one_row_per_session_with_local_iso_times():
    rows = _read_csv(csv_lines([session(at(24, 7, 30), resident="r-1"), session(at(24, 8), "walker-01", kind="walker")],
                               {"rower-01": "Rower by the east gate"}, SHANGHAI))
    assert rows[0] == ["device_id", "machine", "equipment_type", "start", "end", "closed_by", "elapsed_s", "reps",
                       "distance_m", "energy_kcal", "hr_avg", "hr_max", "power_avg", "resident_id"]
    assert rows[1] == ["rower-01", "Rower by the east gate", "rower", "2026-11-24T07:30:00+08:00",
                       "2026-11-24T07:40:00+08:00", "end", "600", "200", "1000.0", "50.0", "98.5", "131", "72.0", "r-1"]
    assert rows[2][:3] == ["walker-01", "walker-01", "walker"] and rows[2][-1] == ""   # unclaimed
    assert len(rows) == 3


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_kept_as_text():
    evil = [session(NOW, "=HYPERLINK(\"http://x\")", resident="@SUM(A1)"), session(NOW, "-2+3", resident="+cmd")]
    rows = _read_csv(csv_lines(evil, {"-2+3": "=1+1"}, SHANGHAI))
    assert [(r[0], r[1], r[-1]) for r in rows[1:]] == [
        ("'=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")", "'@SUM(A1)"), ("'-2+3", "'=1+1", "'+cmd")]
    assert rows[1][6] == "600"   # numbers stay numbers
