"""Community usage, for admins: when the fitness circle's machines are used, which stand idle or in trouble, how
many residents exercise this week against last, and every session as CSV.

`summarise` and `csv_lines` are pure (sessions, machines, alerts, `now_ms` and the community's zone in, plain
values out); `usage_router` reads the stores and renders. Days, hours and weeks are the community's local ones.
"""
from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from alerts.lifecycle import Alert
from alerts.service import AlertService
from alerts.vocabulary import AlertType
from dashboards.auth import Admin
from dashboards.exercise_record import local_midnight_ms
from dashboards.heatmap import DAYS, HOURS, render_heatmap
from dashboards.pages import render
from dashboards.views import type_label
from gateway.exercise_store import ExerciseSession
from gateway.models import DeviceKind
from gateway.store import OperationalStore

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MAX_WEEKS = 52
MACHINE_TROUBLE = frozenset({AlertType.EQUIPMENT_FAULT, AlertType.EQUIPMENT_SILENT})

Weeks = Annotated[int, Query(ge=1, le=MAX_WEEKS, description="How many weeks back to look, 1 to 52")]
IdleDays = Annotated[int, Query(ge=1, le=365, description="A machine with no session for this many days is idle")]


@dataclass(frozen=True, slots=True)
class Span:
    since_ms: int
    until_ms: int

    def holds(self, ts: int) -> bool:
        return self.since_ms <= ts < self.until_ms


@dataclass(frozen=True, slots=True)
class Periods:
    window: Span      # the last N weeks as whole local days, today the last of them
    last_week: Span   # the ISO week (Monday to Sunday, local) before this one
    this_week: Span

    @property
    def read(self) -> Span:
        """What to read from the store to fill all three."""
        return Span(min(self.window.since_ms, self.last_week.since_ms), max(self.window.until_ms, self.this_week.until_ms))


def periods(now_ms: int, tz: str, weeks: int) -> Periods:
    """Local midnights, so a day that gains or loses an hour to summer time is still one day."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now_ms / 1000, zone).date()
    monday = today - timedelta(days=today.weekday())

    def days(first: date, count: int) -> Span:
        return Span(local_midnight_ms(first, zone), local_midnight_ms(first + timedelta(days=count), zone))

    return Periods(days(today - timedelta(days=7 * weeks - 1), 7 * weeks), days(monday - timedelta(days=7), 7),
                   days(monday, 7))


@dataclass(frozen=True, slots=True)
class MachineUse:
    device_id: str
    name: str                      # from the community file, else the device id
    equipment_type: str | None     # as its sessions in the window report it; None when it had none
    sessions: int                  # in the window
    active_s: int                  # in the window
    last_start_ms: int | None      # its newest session ever; None if never used


@dataclass(frozen=True, slots=True)
class Trouble:
    alert_id: int
    device_id: str
    name: str
    what: str
    since_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class ResidentWeeks:
    resident_id: str
    name: str
    this_week: int
    last_week: int


@dataclass(frozen=True, slots=True)
class Usage:
    periods: Periods
    heat: tuple[tuple[int, ...], ...]    # sessions in the window by [local weekday][local hour], Monday first
    sessions: int                        # in the window
    ever_used: bool                      # any machine ever had a session
    machines: tuple[MachineUse, ...]     # every machine known, busiest first
    idle: tuple[MachineUse, ...]         # no session for the idle days: never used first, then longest idle
    troubles: tuple[Trouble, ...]        # unresolved fault or silence alerts of machines, oldest first
    residents: tuple[ResidentWeeks, ...]  # residents with claimed sessions this week or last, busiest this week first

    @property
    def active_this_week(self) -> int:
        return sum(1 for r in self.residents if r.this_week)

    @property
    def active_last_week(self) -> int:
        return sum(1 for r in self.residents if r.last_week)


def summarise(sessions: Iterable[ExerciseSession], *, machines: Mapping[str, str], last_starts: Mapping[str, int],
              alerts: Iterable[Alert], residents: Mapping[str, str], now_ms: int, tz: str, weeks: int,
              idle_days: int) -> Usage:
    """One pass over the sessions of `periods(...).read`, oldest first. `machines`: device id -> name of every
    machine known without a session (the community file, the device registry); `residents`: id -> name."""
    zone, p = ZoneInfo(tz), periods(now_ms, tz, weeks)
    heat = [[0] * HOURS for _ in DAYS]
    count: Counter[str] = Counter()
    active: Counter[str] = Counter()
    kind: dict[str, str | None] = {}
    this_week: Counter[str] = Counter()
    last_week: Counter[str] = Counter()
    total = 0
    for s in sessions:
        if p.window.holds(s.start_ts):
            local = datetime.fromtimestamp(s.start_ts / 1000, zone)
            heat[local.weekday()][local.hour] += 1
            total += 1
            count[s.device_id] += 1
            active[s.device_id] += s.elapsed_s
            kind[s.device_id] = s.equipment_type or kind.get(s.device_id)
        if s.resident_id is not None:
            if p.this_week.holds(s.start_ts):
                this_week[s.resident_id] += 1
            elif p.last_week.holds(s.start_ts):
                last_week[s.resident_id] += 1
    uses = [MachineUse(d, machines.get(d) or d, kind.get(d), count[d], active[d], last_starts.get(d))
            for d in sorted(set(machines) | set(last_starts) | set(count))]
    idle_since = now_ms - idle_days * DAY_MS
    people = [ResidentWeeks(r, residents.get(r, r), this_week[r], last_week[r]) for r in set(this_week) | set(last_week)]
    troubles = [Trouble(a.saved_id, a.device_id, machines.get(a.device_id) or a.device_id, type_label(a.alert_type),
                        a.opened_ms, a.detail) for a in alerts if a.alert_type in MACHINE_TROUBLE]
    return Usage(
        periods=p, heat=tuple(tuple(row) for row in heat), sessions=total, ever_used=bool(last_starts),
        machines=tuple(sorted(uses, key=lambda m: (-m.sessions, m.name))),
        idle=tuple(sorted((m for m in uses if m.last_start_ms is None or m.last_start_ms <= idle_since),
                          key=lambda m: (m.last_start_ms or 0, m.name))),
        troubles=tuple(sorted(troubles, key=lambda t: (t.since_ms, t.alert_id))),
        residents=tuple(sorted(people, key=lambda r: (-r.this_week, -r.last_week, r.name))))


CSV_COLUMNS = ("device_id", "machine", "equipment_type", "start", "end", "closed_by", "elapsed_s", "reps", "distance_m",
               "energy_kcal", "hr_avg", "hr_max", "power_avg", "resident_id")
# A spreadsheet runs a cell beginning with one of these as a formula (CSV injection): device ids, names and
# resident ids come from devices and files, so such a cell is kept as text with a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _local_iso(ms: int | None, zone: ZoneInfo) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")


def csv_lines(sessions: Iterable[ExerciseSession], machines: Mapping[str, str], tz: str) -> Iterator[str]:
    """The header, then one line per session, times in ISO 8601 with the community's offset."""
    zone, buffer = ZoneInfo(tz), io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: Iterable[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([csv_cell(v) for v in values])
        return buffer.getvalue()

    # The byte-order mark makes Excel read the file as UTF-8 (machine names may be Chinese); other readers skip it.
    yield "\ufeff" + line(CSV_COLUMNS)
    for s in sessions:
        yield line((s.device_id, machines.get(s.device_id) or s.device_id, s.equipment_type, _local_iso(s.start_ts, zone),
                    _local_iso(s.end_ts, zone), s.closed_by, s.elapsed_s, s.reps, s.distance_m, s.energy_kcal,
                    s.hr_avg, s.hr_max, s.power_avg, s.resident_id))


def _in_weeks(devices: OperationalStore, span: Span) -> Iterator[ExerciseSession]:
    """The span's sessions a week at a time, so a year of a busy community is never in memory at once."""
    for since in range(span.since_ms, span.until_ms, WEEK_MS):
        yield from devices.sessions_between(since, min(since + WEEK_MS, span.until_ms))


def _now_ms() -> int:
    return int(time.time() * 1000)


def usage_router(service: AlertService, devices: OperationalStore) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    tz = service.settings.timezone

    def machine_names() -> dict[str, str]:
        registered = {d: d for d, kind in devices.registered_devices() if kind == DeviceKind.EQUIPMENT}
        return registered | {e.device_id: e.name or e.device_id for e in service.directory.community.equipment}

    def read(now_ms: int, weeks: int, idle_days: int) -> Usage:
        residents = {r.id: r.name for r in service.directory.community.residents}
        return summarise(_in_weeks(devices, periods(now_ms, tz, weeks).read), machines=machine_names(),
                         last_starts=devices.last_session_starts(), alerts=service.unresolved(), residents=residents,
                         now_ms=now_ms, tz=tz, weeks=weeks, idle_days=idle_days)

    @router.get("/usage")
    async def usage_page(request: Request, actor: Admin, weeks: Weeks = 4, idle_days: IdleDays = 3) -> Response:
        now = _now_ms()
        usage = await run_in_threadpool(read, now, weeks, idle_days)
        heatmap = render_heatmap(usage.heat, f"Sessions by hour and day, last {weeks} weeks") if usage.sessions else ""
        return render(request, "usage.html", {"usage": usage, "heatmap": heatmap, "weeks": weeks,
                                              "idle_days": idle_days, "now_ms": now, "max_weeks": MAX_WEEKS})

    @router.get("/usage.csv")
    async def usage_csv(actor: Admin, weeks: Weeks = 4) -> StreamingResponse:
        now = _now_ms()
        names = await run_in_threadpool(machine_names)
        day = datetime.fromtimestamp(now / 1000, ZoneInfo(tz)).date().isoformat()
        return StreamingResponse(csv_lines(_in_weeks(devices, periods(now, tz, weeks).window), names, tz),
                                 media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="usage-{day}-{weeks}w.csv"'})

    return router
