"""Map links for SMS: coordinates in the datum the map service expects.

Chinese map services (AMap/Gaode, Tencent) draw their tiles in GCJ-02, the
state-mandated obfuscation of WGS-84; a GPS fix placed on them unconverted
lands a few hundred metres off, which is a different building or street.
"""
from __future__ import annotations

import math
from typing import Literal

Datum = Literal["wgs84", "gcj02"]

_A = 6378245.0                      # Krasovsky 1940 semi-major axis, as the public formula uses
_EE = 0.00669342162296594323        # its first eccentricity squared


def in_china_box(lat: float, lon: float) -> bool:
    """The rough bounding box the public formula applies to; outside it GCJ-02 equals WGS-84."""
    return 72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271


def _offset_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return ret


def _offset_lon(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return ret


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) in GCJ-02; points outside mainland China's rough box come back unchanged."""
    if not in_china_box(lat, lon):
        return lat, lon
    dlat = _offset_lat(lon - 105.0, lat - 35.0)
    dlon = _offset_lon(lon - 105.0, lat - 35.0)
    radlat = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(radlat) ** 2
    sqrtmagic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrtmagic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * math.cos(radlat) * math.pi)
    return lat + dlat, lon + dlon


def map_link(template: str, lat: float, lon: float, datum: Datum = "gcj02") -> str:
    """The template with {lat} and {lon} filled (6 decimals, about 0.1 m) in the map's datum."""
    if datum == "gcj02":
        lat, lon = wgs84_to_gcj02(lat, lon)
    elif datum != "wgs84":
        raise ValueError(f"unknown map datum {datum!r}")
    # replace, not str.format: a URL template may hold other braces.
    return template.replace("{lat}", f"{lat:.6f}").replace("{lon}", f"{lon:.6f}")
