"""Map links: WGS-84 fixes converted to GCJ-02 for Chinese maps, untouched elsewhere."""
from __future__ import annotations

import pytest

from alerts.maps import map_link, wgs84_to_gcj02
from gateway.geo import distance_m

SHANGHAI = (31.2304, 121.4737)     # People's Square, WGS-84
LONDON = (51.5074, -0.1278)
AMAP = "https://uri.amap.com/marker?position={lon},{lat}"


def test_a_point_in_shanghai_moves_a_few_hundred_metres():
    moved = wgs84_to_gcj02(*SHANGHAI)
    assert 100 < distance_m(*SHANGHAI, *moved) < 700


def test_in_shanghai_the_shift_is_east_and_slightly_south():
    lat, lon = wgs84_to_gcj02(*SHANGHAI)
    assert lon > SHANGHAI[1] and lat < SHANGHAI[0]


def test_matches_the_published_beijing_reference_value():
    # The public formula's usual test vector (e.g. the coordtransform libraries): WGS-84 (39.915, 116.404).
    assert wgs84_to_gcj02(39.915, 116.404) == pytest.approx((39.91640428150164, 116.41024449916938), abs=1e-9)


def test_a_point_in_london_is_unchanged():
    assert wgs84_to_gcj02(*LONDON) == LONDON


def test_link_fills_lat_and_lon_with_six_decimals_in_gcj02():
    lat, lon = wgs84_to_gcj02(*SHANGHAI)
    assert map_link(AMAP, *SHANGHAI, "gcj02") == f"https://uri.amap.com/marker?position={lon:.6f},{lat:.6f}"


def test_link_for_a_wgs84_map_keeps_the_gps_fix():
    template = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}"
    assert map_link(template, *SHANGHAI, "wgs84") == "https://www.openstreetmap.org/?mlat=31.230400&mlon=121.473700"


def test_link_template_may_hold_other_braces():
    assert map_link("https://m.example/{x}?p={lat},{lon}", 51.5, -0.1, "wgs84") == "https://m.example/{x}?p=51.500000,-0.100000"


def test_unknown_datum_is_refused():
    with pytest.raises(ValueError, match="datum"):
        map_link(AMAP, *SHANGHAI, "bd09")
