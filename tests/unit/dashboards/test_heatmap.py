"""The week heatmap's SVG: a shaded cell per hour and day with its count as a tooltip, and a legend."""
from __future__ import annotations

import re

import pytest

from dashboards.heatmap import legend_ranges, level, render_heatmap


def week(**cells: int) -> list[list[int]]:
    """Counts, zero except cells named like mon_7=3."""
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    grid = [[0] * 24 for _ in days]
    for name, n in cells.items():
        day, hour = name.split("_")
        grid[days.index(day)][int(hour)] = n
    return grid


def test_shades_grow_with_the_count_and_the_busiest_cell_is_darkest():
    assert [level(n, 8) for n in (0, 1, 2, 3, 4, 5, 8)] == [0, 1, 1, 2, 2, 3, 4]
    assert level(1, 1) == 4


def test_the_legend_lists_only_the_shades_in_use():
    assert legend_ranges(8) == [(1, 1, 2), (2, 3, 4), (3, 5, 6), (4, 7, 8)]
    assert legend_ranges(2) == [(2, 1, 1), (4, 2, 2)]


def test_every_hour_of_every_day_is_a_cell_with_its_count_as_its_title():
    svg = render_heatmap(week(tue_7=3, sun_23=1), "Sessions")
    assert svg.count('class="cell ') == 7 * 24
    assert '<rect class="cell l4" x="222" y="28" width="24" height="20" rx="3" data-day="Tue" data-hour="7" data-count="3">' \
           "<title>Tue 07:00-08:00: 3 sessions</title>" in svg
    assert "<title>Sun 23:00-00:00: 1 session</title>" in svg
    assert re.search(r'data-day="Mon" data-hour="0" data-count="0"><title>Mon 00:00-01:00: 0 sessions', svg)


def test_the_title_is_escaped_and_a_wrong_grid_refused():
    assert 'aria-label="&lt;b&gt;"' in render_heatmap(week(), "<b>")
    with pytest.raises(ValueError):
        render_heatmap([[0] * 24] * 6, "Sessions")
