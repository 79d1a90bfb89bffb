"""Geofences and local night hours, in the directory's terms: small pure helpers for the rules.

The geometry itself is gateway/geo.py's; a wander is judged on the fence
and, at night, graded up.
"""
from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from alerts.directory import CircleFence, PolygonFence
from gateway import geo


def inside(fence: CircleFence | PolygonFence, lat: float, lon: float) -> bool:
    if isinstance(fence, CircleFence):
        return geo.distance_m(fence.lat, fence.lon, lat, lon) <= fence.radius_m
    return geo.in_polygon(lat, lon, fence.points)


def distance_outside_m(fence: CircleFence | PolygonFence, lat: float, lon: float) -> float:
    """How far outside the fence a point is, in metres; 0 when it is inside."""
    if isinstance(fence, CircleFence):
        return max(0.0, geo.distance_m(fence.lat, fence.lon, lat, lon) - fence.radius_m)
    if geo.in_polygon(lat, lon, fence.points):
        return 0.0
    return geo.edge_distance_m(lat, lon, fence.points)


def is_night(at_ms: int, tz: ZoneInfo, start: time, end: time) -> bool:
    """Whether the local time falls in [start, end), which may wrap past midnight."""
    t = datetime.fromtimestamp(at_ms / 1000, tz).time()
    if start <= end:
        return start <= t < end
    return t >= start or t < end
