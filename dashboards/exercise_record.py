"""A resident's exercise record as their page shows it: weekly totals per machine type and a chart of
the last weeks, drawn as SVG on the server (pure: sessions, time and zone in, text out)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from gateway.exercise_store import ExerciseSession

# What each machine counts, and what the record calls it.
MACHINES: dict[str, tuple[str, str]] = {
    "rower": ("Rower", "strokes"),
    "elliptical": ("Elliptical", "steps"),
    "walker": ("Walker", "steps"),
    "ab_board": ("Ab board", "reps"),
    "waist_twister": ("Waist twister", "turns"),
}
# One colour per machine type, told apart also by the legend's order (colour is never the only cue).
COLOURS = {"rower": "#1f77b4", "elliptical": "#2ca02c", "walker": "#ff7f0e", "ab_board": "#9467bd",
           "waist_twister": "#8c564b"}
UNKNOWN = ("Machine", "moves")


def machine_name(equipment_type: str | None) -> str:
    return MACHINES.get(equipment_type or "", UNKNOWN)[0]


def count_word(equipment_type: str | None) -> str:
    return MACHINES.get(equipment_type or "", UNKNOWN)[1]


def week_of(ts_ms: int, tz: ZoneInfo) -> date:
    """The Monday of the local week a moment falls in."""
    day = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(tz).date()
    return day - timedelta(days=day.weekday())


def local_midnight_ms(day: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, datetime.min.time(), tz).timestamp() * 1000)


@dataclass
class Totals:
    sessions: int = 0
    seconds: int = 0
    reps: int = 0
    distance_m: float = 0.0
    energy_kcal: float = 0.0

    def add(self, s: ExerciseSession) -> None:
        self.absorb(Totals(1, s.elapsed_s, s.reps, s.distance_m, s.energy_kcal))

    def absorb(self, other: Totals) -> None:
        self.sessions += other.sessions
        self.seconds += other.seconds
        self.reps += other.reps
        self.distance_m += other.distance_m
        self.energy_kcal += other.energy_kcal

    @property
    def minutes(self) -> int:
        return round(self.seconds / 60)


@dataclass
class Week:
    monday: date
    by_type: dict[str, Totals] = field(default_factory=dict)

    @property
    def all(self) -> Totals:
        t = Totals()
        for x in self.by_type.values():
            t.absorb(x)
        return t


def weeks(sessions: Sequence[ExerciseSession], now_ms: int, tz: ZoneInfo, count: int = 8) -> list[Week]:
    """The last `count` local weeks, oldest first, this week last, each with its totals per machine type."""
    this = week_of(now_ms, tz)
    out = [Week(this - timedelta(weeks=n)) for n in range(count - 1, -1, -1)]
    index = {w.monday: w for w in out}
    for s in sessions:
        w = index.get(week_of(s.start_ts, tz))
        if w is not None:
            w.by_type.setdefault(s.equipment_type or "", Totals()).add(s)
    return out


def chart_svg(ws: Sequence[Week], width: int = 340, height: int = 180) -> str:
    """Minutes of exercise per week, stacked by machine type, with the week's total above each bar."""
    left, bottom, top = 30, 22, 16
    plot_h = height - bottom - top
    most = max([w.all.minutes for w in ws] + [10])
    scale = plot_h / most
    slot = (width - left) / max(1, len(ws))
    bar = slot * 0.62
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="Minutes of exercise per week, last {len(ws)} weeks" class="weeks-chart">']
    for frac in (0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#666">'
                     f'{round(most * frac)}</text>')
    for i, w in enumerate(ws):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        for kind in MACHINES:
            t = w.by_type.get(kind)
            if t is None or not t.minutes:
                continue
            h = t.minutes * scale
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{COLOURS[kind]}">'
                         f'<title>{escape(machine_name(kind))}: {t.minutes} min</title></rect>')
        total = w.all.minutes
        if total:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="10">{total}</text>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="10" fill="#444">'
                     f'{w.monday.day}/{w.monday.month}</text>')
    kinds = [k for k in MACHINES if any(k in w.by_type and w.by_type[k].minutes for w in ws)]
    x = float(left)
    for kind in kinds:   # the legend: which colour is which machine, in the bars' stacking order
        name = escape(machine_name(kind))
        parts.append(f'<rect x="{x:.1f}" y="{height + 6}" width="10" height="10" fill="{COLOURS[kind]}"/>'
                     f'<text x="{x + 14:.1f}" y="{height + 15}" font-size="11">{name}</text>')
        x += 24 + 6.5 * len(name)
    parts.append("</svg>")
    if kinds:
        parts[0] = parts[0].replace(f"0 0 {width} {height}", f"0 0 {width} {height + 22}")
    return "".join(parts)
