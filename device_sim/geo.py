"""Positions in a community: points, metre offsets, distances and walks between spots.

The geometry is gateway/geo.py's; this module gives it the simulator's `GeoPoint`.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gateway import geo


@dataclass(frozen=True, slots=True)
class GeoPoint:
    lat: float
    lon: float

    def moved(self, east_m: float, north_m: float) -> GeoPoint:
        """The point `east_m` east and `north_m` north of this one (flat earth: fine within a few km)."""
        return GeoPoint(*geo.moved(self.lat, self.lon, east_m, north_m))


def distance_m(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance (haversine)."""
    return geo.distance_m(a.lat, a.lon, b.lat, b.lon)


def offset_m(origin: GeoPoint, p: GeoPoint) -> tuple[float, float]:
    """(east, north) metres from `origin` to `p`, the inverse of `GeoPoint.moved`."""
    return geo.offset_m(origin.lat, origin.lon, p.lat, p.lon)


def away_from(origin: GeoPoint, p: GeoPoint) -> tuple[float, float]:
    """The (east, north) unit vector pointing from `origin` to `p`; north when they are the same spot."""
    east, north = offset_m(origin, p)
    norm = math.hypot(east, north)
    return (east / norm, north / norm) if norm >= 1.0 else (0.0, 1.0)


@dataclass(frozen=True, slots=True)
class Community:
    """The neighbourhood the devices live in: a centre and a radius."""

    centre: GeoPoint = GeoPoint(31.2304, 121.4737)  # a Shanghai neighbourhood
    radius_m: float = 800.0

    def random_spot(self, rng: random.Random, within: float = 1.0) -> GeoPoint:
        """A uniformly random point inside `within` x the radius."""
        r = self.radius_m * within * math.sqrt(rng.random())
        bearing = rng.uniform(0, 2 * math.pi)
        return self.centre.moved(r * math.sin(bearing), r * math.cos(bearing))

    def contains(self, p: GeoPoint) -> bool:
        return distance_m(self.centre, p) <= self.radius_m


@dataclass(frozen=True, slots=True)
class Leg:
    """Walking a straight line from `start` to `end` between two offsets in ms."""

    start: GeoPoint
    end: GeoPoint
    t0_ms: int
    t1_ms: int

    def at(self, t_ms: int) -> GeoPoint:
        if self.t1_ms <= self.t0_ms:
            return self.end
        f = min(1.0, max(0.0, (t_ms - self.t0_ms) / (self.t1_ms - self.t0_ms)))
        return GeoPoint(self.start.lat + f * (self.end.lat - self.start.lat),
                        self.start.lon + f * (self.end.lon - self.start.lon))


def street_legs(start: GeoPoint, end: GeoPoint, t0_ms: int, speed_mps: float) -> list[Leg]:
    """A walk along the street grid: first east-west, then north-south, at a steady pace."""
    east, _ = offset_m(start, end)
    corner = start.moved(east, 0.0)
    legs, t = [], t0_ms
    for a, b in ((start, corner), (corner, end)):
        dt = round(distance_m(a, b) / speed_mps * 1000)
        legs.append(Leg(a, b, t, t + dt))
        t += dt
    return legs


def noisy_fix(rng: random.Random, true: GeoPoint, accuracy_m: float) -> GeoPoint:
    """A reported position: gaussian error, never further from the truth than the stated accuracy."""
    err = min(abs(rng.gauss(0, accuracy_m / 2)), accuracy_m)
    bearing = rng.uniform(0, 2 * math.pi)
    return true.moved(err * math.sin(bearing), err * math.cos(bearing))
