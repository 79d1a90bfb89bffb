"""Offline SVG map: projection, zoom fit, fence radius, GCJ-02 shift, track split, escaping, scale bar, tiles."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from alerts.directory import CircleFence, PolygonFence
from alerts.maps import wgs84_to_gcj02
from dashboards.mapsvg import Marker, choose_zoom, project, render_map, scale_bar

NS = {"s": "http://www.w3.org/2000/svg"}
SH = (31.2304, 121.4737)            # Shanghai, People's Square
LONDON = (51.5074, -0.1278)
T0 = 1_718_000_000_000
W, H, MARGIN = 640, 420, 24


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def zoom_of(root: ET.Element) -> int:
    return int(root.attrib["data-zoom"])


def polyline_points(root: ET.Element, cls: str) -> list[tuple[float, float]]:
    (line,) = [e for e in root.iterfind("s:polyline", NS) if e.get("class") == cls]
    return [(float(a), float(b)) for a, b in (p.split(",") for p in line.attrib["points"].split())]


def km_track(lat: float, lon: float, n: int = 20, dlat: float = 0.006, dlon: float = 0.007) -> list[tuple[int, float, float]]:
    """A ~1 km walk (north-east by default) from (lat, lon), one point a minute."""
    return [(T0 + i * 60_000, lat + dlat * i / (n - 1), lon + dlon * i / (n - 1)) for i in range(n)]


def test_project_origin_and_known_point():
    assert project(0.0, 0.0, 0) == pytest.approx((128.0, 128.0))
    assert project(0.0, 0.0, 3) == pytest.approx((1024.0, 1024.0))
    # By hand (the OSM slippy-map formula, world size 256 * 2^17 = 33554432 px):
    #   x = (121.4737 + 180) / 360 * 33554432 = 28099385.46
    #   y = (1 - ln(tan(31.2304 deg) + sec(31.2304 deg)) / pi) / 2 * 33554432 = 13710465.90
    x, y = project(*SH, 17)
    assert abs(x - 28_099_385.46) < 0.5 and abs(y - 13_710_465.90) < 0.5
    assert (int(x // 256), int(y // 256)) == (109_763, 53_556)   # the z17 tile holding People's Square


def _fits(points, zoom):
    xy = [project(lat, lon, zoom) for lat, lon in points]
    xs, ys = [x for x, _ in xy], [y for _, y in xy]
    return max(xs) - min(xs) <= W - 2 * MARGIN and max(ys) - min(ys) <= H - 2 * MARGIN


# North and east are sized so that the margin decides the zoom (they would fit the bare canvas one zoom up).
@pytest.mark.parametrize(("dlat", "dlon"), [(0.006, 0.007), (0.0147, 0.0), (0.0, 0.0131)], ids=["ne", "north", "east"])
def test_chosen_zoom_fits_and_the_next_does_not(dlat, dlon):
    track = km_track(*SH, dlat=dlat, dlon=dlon)
    points = [(lat, lon) for _, lat, lon in track]
    zoom = choose_zoom(points, W, H, MARGIN)
    assert 1 <= zoom < 19
    assert _fits(points, zoom) and not _fits(points, zoom + 1)
    # As drawn: every track point inside the canvas less the margin.
    root = parse(render_map(track=track, width=W, height=H))
    assert zoom_of(root) == zoom
    for x, y in polyline_points(root, "track-after"):
        assert MARGIN - 0.1 <= x <= W - MARGIN + 0.1 and MARGIN - 0.1 <= y <= H - MARGIN + 0.1


def test_zoom_for_single_point_or_fence_only():
    assert choose_zoom([SH], W, H) == 17
    assert choose_zoom([], W, H) == 17
    assert zoom_of(parse(render_map(track=[(T0, *SH)]))) == 17
    root = parse(render_map(track=[], fence=CircleFence(lat=SH[0], lon=SH[1], radius_m=2000)))
    assert 10 <= zoom_of(root) <= 15


def test_circle_fence_radius_in_pixels():
    fence = CircleFence(lat=31.23, lon=121.47, radius_m=500)
    root = parse(render_map(track=[(T0, 31.231, 121.471)], fence=fence))
    zoom = zoom_of(root)
    (circle,) = [e for e in root.iterfind("s:circle", NS) if e.get("class") == "fence"]
    mpp = 156543.03392 * math.cos(math.radians(31.23)) / 2**zoom
    assert float(circle.attrib["r"]) == pytest.approx(500 / mpp, abs=0.5)
    # The whole circle is inside the canvas.
    cx, cy, r = (float(circle.attrib[k]) for k in ("cx", "cy", "r"))
    assert cx - r >= 0 and cx + r <= W and cy - r >= 0 and cy + r <= H


def test_polygon_fence_is_drawn_and_counts_for_the_fit():
    corners = ((31.22, 121.46), (31.24, 121.46), (31.24, 121.49), (31.22, 121.49))
    root = parse(render_map(track=[(T0, *SH)], fence=PolygonFence(points=corners)))
    (poly,) = root.iterfind("s:polygon", NS)
    assert poly.get("class") == "fence"
    for pair in poly.attrib["points"].split():
        x, y = map(float, pair.split(","))
        assert 0 <= x <= W and 0 <= y <= H


def world_track(svg: str) -> tuple[int, list[tuple[float, float]]]:
    """The drawn track in world pixels: canvas position plus the canvas offset read off the first tile."""
    root = parse(svg)
    img = root.find("s:image", NS)
    assert img is not None
    _, tx, ty = map(int, img.attrib["href"].split("/")[-3:])
    ox, oy = tx * 256 - float(img.attrib["x"]), ty * 256 - float(img.attrib["y"])
    return zoom_of(root), [(x + ox, y + oy) for x, y in polyline_points(root, "track-after")]


def test_gcj02_moves_points_in_china_only():
    track = km_track(*SH)
    url = "t/{z}/{x}/{y}"
    wgs_svg, gcj_svg = render_map(track=track, tile_url=url), render_map(track=track, tile_url=url, tile_datum="gcj02")
    assert wgs_svg != gcj_svg
    (zoom, wgs), (zoom_g, gcj) = world_track(wgs_svg), world_track(gcj_svg)
    assert zoom == zoom_g
    for (_, lat, lon), (wx, wy), (gx, gy) in zip(track, wgs, gcj, strict=True):
        assert (wx, wy) == pytest.approx(project(lat, lon, zoom), abs=0.2)
        assert (gx, gy) == pytest.approx(project(*wgs84_to_gcj02(lat, lon), zoom), abs=0.2)
        assert math.dist((wx, wy), (gx, gy)) > 20   # GCJ-02 is some 500 m off in Shanghai
    # Markers and fence are converted too: the fence centre stays on the resident's converted position.
    fence = CircleFence(lat=SH[0], lon=SH[1], radius_m=200)
    root = parse(render_map(track=[(T0, *SH)], fence=fence, tile_datum="gcj02",
                            markers=[Marker(lat=SH[0], lon=SH[1], label="now", kind="now")]))
    (circle,) = [e for e in root.iterfind("s:circle", NS) if e.get("class") == "fence"]
    (dot,) = [e for e in root.iterfind("s:circle", NS) if e.get("class") == "dot-after"]
    marker = root.find("s:g/s:circle", NS)
    assert marker is not None
    assert circle.attrib["cx"] == dot.attrib["cx"] == marker.attrib["cx"]
    assert circle.attrib["cy"] == dot.attrib["cy"] == marker.attrib["cy"]
    # Outside China nothing moves: the output is identical.
    ltrack = km_track(*LONDON)
    assert render_map(track=ltrack, tile_datum="gcj02", tile_url=url) == render_map(track=ltrack, tile_url=url)


def test_highlight_splits_track_and_joins_the_lines():
    track = km_track(*SH, n=10)
    since = track[6][0]
    root = parse(render_map(track=track, highlight_since_ms=since))
    before = polyline_points(root, "track-before")
    after = polyline_points(root, "track-after")
    assert len(before) == 6 and len(after) == 1 + 4
    assert after[0] == before[-1]
    lines = {e.get("class"): e for e in root.iterfind("s:polyline", NS)}
    assert lines["track-before"].get("data-first-ms") == str(track[0][0])
    assert lines["track-after"].get("data-first-ms") == str(track[5][0])
    assert lines["track-after"].get("data-last-ms") == str(track[-1][0])
    # Highlight after the last point: only the faded line.
    root = parse(render_map(track=track, highlight_since_ms=track[-1][0] + 1))
    assert [e.get("class") for e in root.iterfind("s:polyline", NS)] == ["track-before"]


def test_dots_only_for_short_tracks():
    short = km_track(*SH, n=300)
    long = km_track(*SH, n=301)
    assert len(parse(render_map(track=short)).findall("s:circle", NS)) == 300
    assert parse(render_map(track=long)).findall("s:circle", NS) == []


def test_text_is_escaped():
    evil = "<script>alert(1)</script>"
    svg = render_map(track=[(T0, *SH)], markers=[Marker(lat=SH[0], lon=SH[1], label=evil, kind="now")],
                     title=f'Mrs "Li" {evil}')
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    root = parse(svg)
    assert root.get("aria-label") == f'Mrs "Li" {evil}'
    (group,) = root.iterfind("s:g[@class='marker marker-now']", NS)
    text = group.find("s:text", NS)
    assert text is not None and text.text == evil
    with pytest.raises(ValueError):
        Marker(lat=0.0, lon=0.0, label="x", kind='" onload="x')


@pytest.mark.parametrize("lat", [0.0, 31.23, 51.5, 60.0, 80.0])
@pytest.mark.parametrize("zoom", [1, 5, 10, 13, 15, 17, 19])
def test_scale_bar_is_round_and_in_range(lat, zoom):
    metres, pixels = scale_bar(lat, zoom)
    mantissa = metres / 10 ** math.floor(math.log10(metres))
    assert mantissa in (1, 2, 5)
    assert 60 <= pixels <= 150
    assert pixels == pytest.approx(metres / (156543.03392 * math.cos(math.radians(lat)) / 2**zoom))


def test_scale_bar_label():
    svg = render_map(track=[(T0, *SH)])
    metres, _ = scale_bar(SH[0], 17)
    assert metres < 1000 and f">{metres} m<" in svg
    svg = render_map(track=[(T0, 31.0, 121.0), (T0 + 1, 31.3, 121.5)])
    assert re.search(r">\d+ km<", svg)


def test_tiles_cover_the_canvas():
    url = "https://tile.example/{z}/{x}/{y}.png?k=a&s=b"
    svg = render_map(track=[(T0, *SH)], tile_url=url)
    assert "k=a&amp;s=b" in svg
    root = parse(svg)
    zoom = zoom_of(root)
    cx, cy = project(*SH, zoom)
    ox, oy = cx - W / 2, cy - H / 2
    xs = range(math.floor(ox / 256), math.floor((ox + W - 1e-9) / 256) + 1)
    ys = range(math.floor(oy / 256), math.floor((oy + H - 1e-9) / 256) + 1)
    want = {f"https://tile.example/{zoom}/{x}/{y}.png?k=a&s=b" for x in xs for y in ys}
    images = root.findall("s:image", NS)
    assert {i.attrib["href"] for i in images} == want and len(images) == len(want)
    # Every canvas pixel lies on some tile.
    for px, py in [(0, 0), (W - 0.1, 0), (0, H - 0.1), (W - 0.1, H - 0.1), (W / 2, H / 2)]:
        assert any(float(i.attrib["x"]) <= px < float(i.attrib["x"]) + 256
                   and float(i.attrib["y"]) <= py < float(i.attrib["y"]) + 256 for i in images)
    # Tiles come before the drawing.
    tags = [e.tag.split("}")[1] for e in root]
    assert tags.index("image") < tags.index("circle")
    assert parse(render_map(track=[(T0, *SH)])).findall("s:image", NS) == []


def test_tiles_wrap_x_and_clamp_y():
    # A world-wide box at zoom 1: the 640 px canvas is wider than the 512 px world, so x wraps around.
    root = parse(render_map(track=[(T0, 70.0, 179.0), (T0 + 1, -70.0, -179.0)], tile_url="{z}/{x}/{y}"))
    assert zoom_of(root) == 1
    hrefs = [i.attrib["href"] for i in root.findall("s:image", NS)]
    assert sorted(set(hrefs)) == ["1/0/0", "1/0/1", "1/1/0", "1/1/1"] and len(hrefs) == 8
    # At the Mercator edge the canvas reaches above the world: no tile rows with y < 0 are asked for.
    root = parse(render_map(track=[(T0, 85.0511, 10.0), (T0 + 1, 85.0511, 10.01)], tile_url="{z}/{x}/{y}"))
    images = root.findall("s:image", NS)
    rows = {int(i.attrib["href"].split("/")[2]) for i in images}
    assert min(rows) == 0 and max(rows) < 2 ** zoom_of(root)
    assert min(float(i.attrib["y"]) for i in images) > 0   # the strip above the world stays plain background


@pytest.mark.parametrize("kwargs", [
    {"track": []},
    {"track": [], "title": "<Mr & Mrs>"},
    {"track": [(T0, *SH)]},
    {"track": [], "markers": [Marker(lat=SH[0], lon=SH[1], label="now", kind="now")]},
    {"track": [], "fence": PolygonFence(points=((31.22, 121.46), (31.24, 121.46), (31.24, 121.49)))},
    {"track": km_track(*SH), "tile_url": "https://t/{z}/{x}/{y}.png", "tile_datum": "gcj02", "highlight_since_ms": T0},
])
def test_output_is_well_formed_svg(kwargs):
    root = parse(render_map(**kwargs))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox") == "0 0 640 420" and root.get("width") == "100%" and root.get("role") == "img"
    assert root.get("aria-label") == (kwargs.get("title") or "Map")


def test_empty_says_no_position_yet():
    root = parse(render_map(track=[]))
    assert [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")] == ["No position yet"]


def test_deterministic_and_rounded():
    kwargs = {"track": km_track(*SH), "markers": [Marker(lat=SH[0], lon=SH[1], label="SOS 14:02", kind="alert")],
              "fence": CircleFence(lat=SH[0], lon=SH[1], radius_m=300), "highlight_since_ms": T0 + 300_000,
              "tile_url": "https://t/{z}/{x}/{y}.png"}
    a, b = render_map(**kwargs), render_map(**kwargs)
    assert a == b
    numbers = re.findall(r'(?:x|y|cx|cy|r)="(-?[\d.]+)"', a)
    assert numbers and all(re.fullmatch(r"-?\d+(\.\d)?", n) for n in numbers)


def marker_at(root: ET.Element, kind: str) -> tuple[float, float]:
    (g,) = [e for e in root.iterfind("s:g", NS) if e.get("class") == f"marker marker-{kind}"]
    c = g.find("s:circle", NS)
    return float(c.attrib["cx"]), float(c.attrib["cy"])


def test_zooming_in_from_the_fit_centres_on_the_focus_and_zooming_out_shows_more():
    track = km_track(*SH)
    last = track[-1][1:]
    fit = parse(render_map(track=track))
    closer = parse(render_map(track=track, markers=[Marker(*last, "now", "now")], zoom_delta=2, focus=last))
    assert zoom_of(closer) == zoom_of(fit) + 2
    assert marker_at(closer, "now") == pytest.approx((W / 2, H / 2), abs=0.5)   # the focus is in the middle
    assert zoom_of(parse(render_map(track=track, zoom_delta=-3))) == zoom_of(fit) - 3
    assert zoom_of(parse(render_map(track=track, zoom_delta=99))) == 19   # never past the deepest zoom


def test_labels_of_markers_close_together_do_not_overlap():
    root = parse(render_map(track=km_track(*SH), markers=[Marker(*SH, "alert 10:00", "alert"),
                                                           Marker(SH[0] + 1e-5, SH[1] + 1e-5, "last 10:05", "now")]))
    ys = sorted(float(g.find("s:text", NS).attrib["y"]) for g in root.iterfind("s:g", NS)
                if g.get("class", "").startswith("marker "))
    assert len(ys) == 2 and ys[1] - ys[0] >= 14
