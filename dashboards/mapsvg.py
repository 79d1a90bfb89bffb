"""Offline map for the operator console: a resident's position, track and geofence as one server-side SVG.

Why: a console in a community centre must show where a resident is even with no internet, so no CDN and
no JavaScript map library. This module only computes markup (no I/O, no network, no clock): Web Mercator
(EPSG:3857) pixels at one integer zoom, optional raster tiles from a caller-given URL template, and a light
background with a faint grid underneath that keeps the map readable when those tiles never load.
Positions arrive in WGS-84; a Chinese tile source draws in GCJ-02, so with tile_datum="gcj02" every
coordinate (track, markers, fence) is converted before projection. Times are never formatted here: the
track's first/last times ride along as epoch-ms data attributes for the caller to show in local time.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from alerts.directory import CircleFence, PolygonFence
from alerts.maps import Datum, wgs84_to_gcj02

TILE = 256
MIN_ZOOM, MAX_ZOOM, SINGLE_POINT_ZOOM = 1, 19, 17
MAX_LAT = 85.0511287798                     # Web Mercator's square world stops here
MPP_EQUATOR_Z0 = 156543.03392               # metres per pixel at the equator, zoom 0
MAX_DOTS = 300                              # longer tracks are drawn as a line only
MARKER_KINDS = frozenset({"press", "alert", "now", "start"})
LABEL_LINE, LABEL_WIDTH = 14, 110           # a marker label's height, and how far apart two must be not to collide

_STYLE = (
    ".bg{fill:#f4f1ea}.grid{fill:none;stroke:#e3ddd0;stroke-width:1}"
    ".track-before{fill:none;stroke:#9a9a9a;stroke-width:1.5;stroke-opacity:.7;stroke-linejoin:round}"
    ".track-after{fill:none;stroke:#1f3f8f;stroke-width:3;stroke-linejoin:round;stroke-linecap:round}"
    ".dot-before{fill:#9a9a9a;fill-opacity:.7}.dot-after{fill:#1f3f8f}"
    ".fence{fill:#f28c28;fill-opacity:.12;stroke:#e07000;stroke-width:2;stroke-dasharray:6 4}"
    ".marker circle{stroke:#fff;stroke-width:2}.marker-press circle{fill:#d62828}"
    ".marker-alert circle{fill:none;stroke:#d62828;stroke-width:3}"
    ".marker-now circle{fill:#1565c0}.marker-start circle{fill:#8a8a8a}"
    "text{font:12px sans-serif;fill:#222}.label{paint-order:stroke;stroke:#fff;stroke-width:3px}"
    ".scale{fill:none;stroke:#222;stroke-width:2}.empty{font-size:16px;fill:#666}"
)


@dataclass(frozen=True, slots=True)
class Marker:
    lat: float
    lon: float
    label: str            # short text shown next to the marker, e.g. "SOS 14:02"
    kind: str = "press"   # "press" (red), "alert" (position at the alert, red ring), "now" (last known, blue), "start" (grey)

    def __post_init__(self) -> None:
        if self.kind not in MARKER_KINDS:
            raise ValueError(f"unknown marker kind {self.kind!r}; expected one of {sorted(MARKER_KINDS)}")


def project(lat: float, lon: float, zoom: int) -> tuple[float, float]:
    """Web Mercator world pixels (x east, y south) at `zoom`; latitude clamped to the Mercator square."""
    size = TILE * 2**zoom
    phi = math.radians(max(-MAX_LAT, min(MAX_LAT, lat)))
    x = (lon + 180.0) / 360.0 * size
    y = (1.0 - math.log(math.tan(phi) + 1.0 / math.cos(phi)) / math.pi) / 2.0 * size
    return x, y


def _unproject(x: float, y: float, zoom: int) -> tuple[float, float]:
    size = TILE * 2**zoom
    lat = math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * y / size))))
    return lat, x / size * 360.0 - 180.0


def _mpp(lat: float, zoom: int) -> float:
    """Metres per pixel at this latitude and zoom."""
    return MPP_EQUATOR_Z0 * math.cos(math.radians(max(-MAX_LAT, min(MAX_LAT, lat)))) / (1 << zoom)


def choose_zoom(points: Sequence[tuple[float, float]], width: int, height: int, margin: int = 24) -> int:
    """The largest zoom in 1..19 at which all (lat, lon) points fit the canvas less `margin` on each side.

    No points, or all at one place: 17 (a few streets around). Nothing fits even at zoom 1: 1.
    """
    if not points:
        return SINGLE_POINT_ZOOM
    xy = [project(lat, lon, 0) for lat, lon in points]
    span_x = max(x for x, _ in xy) - min(x for x, _ in xy)
    span_y = max(y for _, y in xy) - min(y for _, y in xy)
    if span_x == 0 and span_y == 0:
        return SINGLE_POINT_ZOOM
    for zoom in range(MAX_ZOOM, MIN_ZOOM - 1, -1):
        if span_x * 2**zoom <= width - 2 * margin and span_y * 2**zoom <= height - 2 * margin:
            return zoom
    return MIN_ZOOM


def scale_bar(lat: float, zoom: int) -> tuple[int, float]:
    """(metres, pixels): the longest round length (1, 2, 5 x 10^n m) at most 150 px long; it is then >= 60 px."""
    mpp = _mpp(lat, zoom)
    best = 1
    for exp in range(8):
        for step in (1, 2, 5):
            if step * 10**exp / mpp <= 150:
                best = step * 10**exp
    return best, best / mpp


def _scale_label(metres: int) -> str:
    return f"{metres} m" if metres < 1000 else f"{metres / 1000:g} km"


def _n(v: float) -> str:
    s = f"{v:.1f}"
    return "0.0" if s == "-0.0" else s


def _circle_extent(lat: float, lon: float, radius_m: float) -> list[tuple[float, float]]:
    """North, south, east and west points of a circle fence, as drawn (radius at the centre's latitude)."""
    x, y = project(lat, lon, 0)
    r = radius_m / _mpp(lat, 0)
    return [_unproject(x + dx, y + dy, 0) for dx, dy in ((r, 0.0), (-r, 0.0), (0.0, r), (0.0, -r))]


def _empty(width: int, height: int, head: str) -> str:
    return (f'{head}<rect class="bg" width="{width}" height="{height}"/>'
            f'<text class="empty" x="{_n(width / 2)}" y="{_n(height / 2)}" text-anchor="middle">No position yet</text></svg>')


def render_map(*, track: Sequence[tuple[int, float, float]],
               markers: Sequence[Marker] = (),
               fence: CircleFence | PolygonFence | None = None,
               highlight_since_ms: int | None = None,
               width: int = 640, height: int = 420,
               tile_url: str | None = None,
               tile_datum: Datum = "wgs84",
               title: str = "",
               zoom_delta: int = 0,
               focus: tuple[float, float] | None = None) -> str:
    """The complete <svg>...</svg> markup: tiles (optional), fence, track, markers, scale bar.

    track: (ts_ms, lat, lon) in WGS-84, oldest first. Points at/after highlight_since_ms form the bold
    "track-after" line (joined to the last earlier point); earlier ones the thin "track-before" line.
    Without highlight_since_ms the whole track is "track-after".
    The map fits everything it shows; zoom_delta zooms in (or out) from that fit, centred on focus
    (lat, lon) when given, so an operator can look closely at where the person is now.
    """
    if tile_datum not in ("wgs84", "gcj02"):
        raise ValueError(f"unknown map datum {tile_datum!r}")

    def conv(lat: float, lon: float) -> tuple[float, float]:
        return wgs84_to_gcj02(lat, lon) if tile_datum == "gcj02" else (lat, lon)

    label = escape(title or "Map")
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{label}"')
    pts = [(ts, *conv(lat, lon)) for ts, lat, lon in sorted(track, key=lambda p: p[0])]
    marks = [(m, *conv(m.lat, m.lon)) for m in markers]
    extent = [(lat, lon) for _, lat, lon in pts] + [(lat, lon) for _, lat, lon in marks]
    if isinstance(fence, CircleFence):
        fc = conv(fence.lat, fence.lon)
        extent += [fc, *_circle_extent(*fc, fence.radius_m)]
    elif isinstance(fence, PolygonFence):
        fpoly = [conv(lat, lon) for lat, lon in fence.points]
        extent += fpoly
    if not extent:
        return _empty(width, height, f"{head}><title>{label}</title><style>{_STYLE}</style>")

    zoom = max(MIN_ZOOM, min(MAX_ZOOM, choose_zoom(extent, width, height) + zoom_delta))
    if focus is not None and zoom_delta:
        cx, cy = project(*conv(*focus), zoom)
    else:
        xy0 = [project(lat, lon, zoom) for lat, lon in extent]
        cx = (min(x for x, _ in xy0) + max(x for x, _ in xy0)) / 2
        cy = (min(y for _, y in xy0) + max(y for _, y in xy0)) / 2
    ox, oy = cx - width / 2, cy - height / 2

    def px(lat: float, lon: float) -> tuple[float, float]:
        x, y = project(lat, lon, zoom)
        return x - ox, y - oy

    out = [f'{head} data-zoom="{zoom}"><title>{label}</title><style>{_STYLE}</style>',
           f'<rect class="bg" width="{width}" height="{height}"/>']
    # Faint grid on world-pixel multiples of 64: it moves with the map, so panning between renders reads right.
    gx = [f"M{_n(x - ox)} 0V{height}" for x in range(math.ceil(ox / 64) * 64, math.floor(ox + width) + 1, 64)]
    gy = [f"M0 {_n(y - oy)}H{width}" for y in range(math.ceil(oy / 64) * 64, math.floor(oy + height) + 1, 64)]
    out.append(f'<path class="grid" d="{"".join(gx + gy)}"/>')
    if tile_url is not None:
        n = 2**zoom
        ty0, ty1 = max(0, math.floor(oy / TILE)), min(n - 1, math.ceil((oy + height) / TILE) - 1)
        for ty in range(ty0, ty1 + 1):
            for tx in range(math.floor(ox / TILE), math.ceil((ox + width) / TILE)):
                url = tile_url.replace("{z}", str(zoom)).replace("{x}", str(tx % n)).replace("{y}", str(ty))
                out.append(f'<image href="{escape(url)}" x="{_n(tx * TILE - ox)}" y="{_n(ty * TILE - oy)}" '
                           f'width="{TILE}" height="{TILE}"/>')

    if isinstance(fence, CircleFence):
        fx, fy = px(*fc)
        out.append(f'<circle class="fence" cx="{_n(fx)}" cy="{_n(fy)}" r="{_n(fence.radius_m / _mpp(fc[0], zoom))}"/>')
    elif isinstance(fence, PolygonFence):
        corners = " ".join(f"{_n(x)},{_n(y)}" for x, y in (px(lat, lon) for lat, lon in fpoly))
        out.append(f'<polygon class="fence" points="{corners}"/>')

    if pts:
        cut = len(pts) if highlight_since_ms is None else next(
            (i for i, p in enumerate(pts) if p[0] >= highlight_since_ms), len(pts))
        before, after = ([], pts) if highlight_since_ms is None else (pts[:cut], pts[cut:])
        if before and after:
            after = [before[-1], *after]  # one continuous line across the split
        for cls, seg in (("track-before", before), ("track-after", after)):
            if seg:
                coords = " ".join(f"{_n(x)},{_n(y)}" for x, y in (px(lat, lon) for _, lat, lon in seg))
                out.append(f'<polyline class="{cls}" points="{coords}" data-first-ms="{seg[0][0]}" '
                           f'data-last-ms="{seg[-1][0]}"/>')
        if len(pts) <= MAX_DOTS:
            for i, (ts, lat, lon) in enumerate(pts):
                x, y = px(lat, lon)
                dot = "dot-after" if highlight_since_ms is None or i >= cut else "dot-before"
                out.append(f'<circle class="{dot}" cx="{_n(x)}" cy="{_n(y)}" r="2" data-ts-ms="{ts}"/>')

    placed: list[tuple[float, float]] = []   # where labels went: one close to another moves down a line
    for m, lat, lon in marks:
        x, y = px(lat, lon)
        right = x > width - 120  # near the right edge: label on the left of the marker
        lx, anchor = (x - 10, "end") if right else (x + 10, "start")
        ly = y + 4
        while any(abs(ly - py) < LABEL_LINE and abs(lx - qx) < LABEL_WIDTH for qx, py in placed):
            ly += LABEL_LINE
        placed.append((lx, ly))
        radius = 9 if m.kind == "alert" else 6
        out.append(f'<g class="marker marker-{escape(m.kind)}"><circle cx="{_n(x)}" cy="{_n(y)}" r="{radius}"/>'
                   f'<text class="label" x="{_n(lx)}" y="{_n(ly)}" text-anchor="{anchor}">{escape(m.label)}</text></g>')

    metres, length = scale_bar(_unproject(cx, cy, zoom)[0], zoom)
    sx, sy = 12.0, height - 14.0
    out.append(f'<g class="scale-bar"><path class="scale" d="M{_n(sx)} {_n(sy - 5)}V{_n(sy)}H{_n(sx + length)}V{_n(sy - 5)}"/>'
               f'<text class="label" x="{_n(sx)}" y="{_n(sy - 8)}">{_scale_label(metres)}</text></g>')
    out.append(f'<text class="label" x="{width - 16}" y="22" text-anchor="middle" font-weight="bold">N</text></svg>')
    return "".join(out)
