"""Geometry on WGS-84 coordinates in degrees: distances, metre offsets, polygons.

Pure functions of (lat, lon) pairs, shared by the alert rules (geofences)
and the device simulator (walks, position fixes). Apart from `distance_m`,
they treat the ground around the point in question as flat: fine at the
scale of a neighbourhood (a few km), away from the poles and the antimeridian.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius

LatLon = tuple[float, float]


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))  # min: rounding near antipodes


def moved(lat: float, lon: float, east_m: float, north_m: float) -> LatLon:
    """The point `east_m` east and `north_m` north of (lat, lon)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def offset_m(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """(east, north) metres from (lat0, lon0) to (lat, lon), the inverse of `moved`."""
    north = math.radians(lat - lat0) * EARTH_RADIUS_M
    east = math.radians(lon - lon0) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    return east, north


def in_polygon(lat: float, lon: float, points: Sequence[LatLon]) -> bool:
    """Whether the point lies inside the polygon of (lat, lon) corners."""
    # Ray casting on raw lat/lon: fine for neighbourhood-sized fences away from the antimeridian.
    inside = False
    j = len(points) - 1
    for i, (yi, xi) in enumerate(points):
        yj, xj = points[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def segment_distance_m(lat: float, lon: float, a: LatLon, b: LatLon) -> float:
    """Metres from the point to the segment a-b, projected flat around the point."""
    ax, ay = offset_m(lat, lon, *a)
    bx, by = offset_m(lat, lon, *b)
    dx, dy = bx - ax, by - ay
    t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / (dx * dx + dy * dy)))
    return math.hypot(ax + t * dx, ay + t * dy)


def edge_distance_m(lat: float, lon: float, points: Sequence[LatLon]) -> float:
    """Metres from the point to the nearest edge of the polygon, wherever the point is."""
    return min(segment_distance_m(lat, lon, points[i - 1], points[i]) for i in range(len(points)))
