"""A week heatmap as one server-side SVG: days down, hours of the day across, each cell shaded by its count.

Why SVG from the server: the console works with no internet and no JavaScript chart library (as the maps
in dashboards/mapsvg.py). Only markup is computed here: no clock, no time zones (the caller buckets).
Each cell carries its count as a <title> (a tooltip, and what a screen reader says) and as data attributes.
"""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HOURS = 24
LEVELS = 4                            # shades above zero; a cell's shade is its count as a share of the busiest cell
CELL_W, CELL_H, GAP = 26, 22, 2
LEFT, TOP, AXIS, LEGEND = 40, 6, 20, 34

_STYLE = (
    "text{font:12px sans-serif;fill:#5f6b7a}"
    ".l0{fill:#eef1f5}.l1{fill:#c6dbef}.l2{fill:#7fb0dd}.l3{fill:#3b7fc4}.l4{fill:#16427f}"
)


def level(count: int, peak: int) -> int:
    """0 for no session; otherwise 1..LEVELS, the busiest cell LEVELS."""
    if count <= 0 or peak <= 0:
        return 0
    return max(1, -(-count * LEVELS // peak))   # ceiling of count / peak * LEVELS


def legend_ranges(peak: int) -> list[tuple[int, int, int]]:
    """(level, lowest count, highest count) of each shade in use: with a peak of 2, only two shades are."""
    out = []
    for lvl in range(1, LEVELS + 1):
        counts = [c for c in range(1, peak + 1) if level(c, peak) == lvl]
        if counts:
            out.append((lvl, counts[0], counts[-1]))
    return out


def _cell_title(day: str, hour: int, count: int) -> str:
    return f"{day} {hour:02d}:00-{(hour + 1) % 24:02d}:00: {count} session{'' if count == 1 else 's'}"


def render_heatmap(counts: Sequence[Sequence[int]], title: str) -> str:
    """The <svg> for counts[day][hour] (7 x 24, Monday first), with hour and day labels and a legend."""
    if len(counts) != len(DAYS) or any(len(row) != HOURS for row in counts):
        raise ValueError("a week heatmap needs 7 rows of 24 hourly counts")
    peak = max(max(row) for row in counts)
    width = LEFT + HOURS * CELL_W
    grid_h = len(DAYS) * CELL_H
    height = TOP + grid_h + AXIS + LEGEND
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="{escape(title)}" class="heatmap"><style>{_STYLE}</style>']
    for d, day in enumerate(DAYS):
        y = TOP + d * CELL_H
        out.append(f'<text x="{LEFT - 6}" y="{y + CELL_H - 7}" text-anchor="end">{day}</text>')
        for h, count in enumerate(counts[d]):
            out.append(f'<rect class="cell l{level(count, peak)}" x="{LEFT + h * CELL_W}" y="{y}" '
                       f'width="{CELL_W - GAP}" height="{CELL_H - GAP}" rx="3" data-day="{day}" data-hour="{h}" '
                       f'data-count="{count}"><title>{_cell_title(day, h, count)}</title></rect>')
    axis_y = TOP + grid_h + 14
    out += [f'<text x="{LEFT + h * CELL_W + (CELL_W - GAP) / 2:g}" y="{axis_y}" text-anchor="middle">{h:02d}</text>'
            for h in range(0, HOURS, 3)]
    out.append(_legend(peak, axis_y + 24))
    out.append("</svg>")
    return "".join(out)


def _legend(peak: int, y: int) -> str:
    parts = ['<g class="legend">', f'<text x="{LEFT}" y="{y}">Sessions:</text>']
    x = LEFT + 72
    for lvl, low, high in [(0, 0, 0), *legend_ranges(peak)]:
        label = str(low) if low == high else f"{low}-{high}"
        parts.append(f'<rect class="l{lvl}" x="{x}" y="{y - 12}" width="14" height="14" rx="3"/>'
                     f'<text x="{x + 18}" y="{y}">{label}</text>')
        x += 26 + 8 * len(label)
    parts.append("</g>")
    return "".join(parts)
