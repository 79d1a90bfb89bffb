"""The usage page and its CSV through the app: admins only, sessions from the real operational store."""
from __future__ import annotations

import csv
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.unit.dashboards.web_support import logged_in
from tests.unit.exercise_support import exercise

HOUR = 3_600_000


def _recent_hour_start() -> int:
    """The start of an hour two days ago: inside every window, and its cell is easy to name."""
    return (int(time.time() * 1000) - 2 * 24 * HOUR) // HOUR * HOUR


def _cell(ms: int) -> str:
    local = datetime.fromtimestamp(ms / 1000, ZoneInfo("Asia/Shanghai"))
    return f'data-day="{local.strftime("%a")}" data-hour="{local.hour}"'


def test_an_admin_sees_the_heatmap_machines_residents_and_a_csv_link(web_parts):
    client, _, devices = web_parts
    start = _recent_hour_start()
    exercise(devices, "eq-home", "s1", start, resident_id="r-1")
    exercise(devices, "eq-home", "s2", start + 20 * 60_000)
    logged_in(client, "admin")
    page = client.get("/usage")
    assert page.status_code == 200
    assert f'{_cell(start)} data-count="2"><title>' in page.text
    assert page.text.count('class="cell ') == 7 * 24
    assert '<a href="/usage">Usage</a>' in page.text                  # in the nav
    assert 'href="/usage.csv?weeks=4"' in page.text
    assert "Wang Guilan" in page.text                                  # claimed a session
    assert "<td>eq-home" in page.text                                  # the machine, named by its id


def test_the_csv_is_an_attachment_with_one_row_per_session(web_parts):
    client, _, devices = web_parts
    start = _recent_hour_start()
    exercise(devices, "eq-home", "s1", start, resident_id="r-1")
    exercise(devices, "eq-park", "s2", start - 20 * 24 * HOUR)   # 3 weeks ago: not in a 1-week export
    logged_in(client, "admin")
    one_week = client.get("/usage.csv?weeks=1")
    assert one_week.status_code == 200
    assert one_week.headers["content-type"].startswith("text/csv")
    assert one_week.headers["content-disposition"].startswith('attachment; filename="usage-')
    rows = list(csv.reader(one_week.text.removeprefix("\ufeff").splitlines()))
    assert [(r[0], r[-1]) for r in rows[1:]] == [("eq-home", "r-1")]
    assert len(list(csv.reader(client.get("/usage.csv?weeks=4").text.splitlines()))) == 3


def test_an_operator_is_refused_the_page_and_the_csv_and_has_no_link(web_parts):
    client, _, _ = web_parts
    logged_in(client, "chen")
    assert client.get("/usage").status_code == 403
    assert client.get("/usage.csv").status_code == 403
    assert 'href="/usage"' not in client.get("/console").text


def test_weeks_out_of_range_is_refused_naming_the_parameter(web_parts):
    client, _, _ = web_parts
    logged_in(client, "admin")
    for bad in ("0", "53", "many"):
        for path in ("/usage", "/usage.csv"):
            r = client.get(path, params={"weeks": bad})
            assert r.status_code == 422, (path, bad)
            [problem] = r.json()["detail"]
            assert problem["loc"] == ["query", "weeks"]
    assert "52" in client.get("/usage?weeks=53").json()["detail"][0]["msg"]


def test_a_community_with_no_session_yet_is_told_so_instead_of_an_empty_grid(web_parts):
    client, _, _ = web_parts
    logged_in(client, "admin")
    page = client.get("/usage")
    assert "No exercise session has been recorded yet" in page.text
    assert "<svg" not in page.text
    assert "never used" in page.text   # the community's machine eq-home


def test_machines_in_trouble_link_to_their_alert(web_parts, svc):
    client, _, _ = web_parts
    day = svc.clock.ms
    svc.engine.restore([("eq-park", "equipment")], day)
    svc.tick(day + 3 * 24 * HOUR)   # a registered machine never heard from
    troubles = [a for a in svc.unresolved() if a.device_id == "eq-park"]
    assert troubles
    logged_in(client, "admin")
    page = client.get("/usage")
    for alert in troubles:
        assert f'<a href="/alerts/{alert.id}">eq-park</a>' in page.text
