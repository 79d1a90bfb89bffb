"""Geofence geometry and local night hours: small pure helpers for the rules."""
from __future__ import annotations

import math
from datetime import datetime, time
from zoneinfo import ZoneInfo

from alerts.directory import CircleFence, PolygonFence

_EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _in_polygon(lat: float, lon: float, points: tuple[tuple[float, float], ...]) -> bool:
    # Ray casting on raw lat/lon: fine for neighbourhood-sized fences away from the antimeridian.
    inside = False
    j = len(points) - 1
    for i, (yi, xi) in enumerate(points):
        yj, xj = points[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def inside(fence: CircleFence | PolygonFence, lat: float, lon: float) -> bool:
    if isinstance(fence, CircleFence):
        return distance_m(fence.lat, fence.lon, lat, lon) <= fence.radius_m
    return _in_polygon(lat, lon, fence.points)


def _segment_distance_m(lat: float, lon: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Metres from a point to a polygon edge, on a local flat projection around the point (fine at fence scale)."""
    k = math.cos(math.radians(lat))
    m_per_deg = math.pi * _EARTH_RADIUS_M / 180
    ax, ay = (a[1] - lon) * k * m_per_deg, (a[0] - lat) * m_per_deg
    bx, by = (b[1] - lon) * k * m_per_deg, (b[0] - lat) * m_per_deg
    dx, dy = bx - ax, by - ay
    t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / (dx * dx + dy * dy)))
    return math.hypot(ax + t * dx, ay + t * dy)


def distance_outside_m(fence: CircleFence | PolygonFence, lat: float, lon: float) -> float:
    """How far outside the fence a point is, in metres; 0 when it is inside."""
    if isinstance(fence, CircleFence):
        return max(0.0, distance_m(fence.lat, fence.lon, lat, lon) - fence.radius_m)
    if _in_polygon(lat, lon, fence.points):
        return 0.0
    pts = fence.points
    return min(_segment_distance_m(lat, lon, pts[i - 1], pts[i]) for i in range(len(pts)))


def is_night(at_ms: int, tz: ZoneInfo, start: time, end: time) -> bool:
    """Whether the local time falls in [start, end), which may wrap past midnight."""
    t = datetime.fromtimestamp(at_ms / 1000, tz).time()
    if start <= end:
        return start <= t < end
    return t >= start or t < end
