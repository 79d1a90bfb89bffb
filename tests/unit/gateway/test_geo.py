"""Geometry on WGS-84 degrees: great-circle distances, metre offsets, polygons and their edges."""
from __future__ import annotations

import math

import pytest

from gateway.geo import (
    EARTH_RADIUS_M,
    distance_m,
    edge_distance_m,
    in_polygon,
    moved,
    offset_m,
    segment_distance_m,
)

SHANGHAI = (31.2304, 121.4737)
# A block about 380 m east-west and 330 m north-south, corners as (lat, lon).
BLOCK = ((31.2290, 121.4720), (31.2290, 121.4760), (31.2320, 121.4760), (31.2320, 121.4720))
M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180   # about 111.2 km


def test_the_earth_radius_is_the_iugg_mean_radius():
    assert EARTH_RADIUS_M == 6_371_008.8


def test_one_degree_of_latitude_is_about_111_2_km():
    assert distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(111_195, abs=1)


def test_one_degree_of_longitude_shrinks_with_the_cosine_of_the_latitude():
    assert distance_m(60.0, 10.0, 60.0, 11.0) == pytest.approx(111_195 / 2, rel=1e-3)


def test_a_point_is_no_distance_from_itself():
    assert distance_m(*SHANGHAI, *SHANGHAI) == 0.0


def test_opposite_sides_of_the_earth_are_half_its_circumference_apart():
    assert distance_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_M)


def test_moving_north_by_a_kilometre_lands_a_kilometre_away():
    assert distance_m(*SHANGHAI, *moved(*SHANGHAI, 0.0, 1000.0)) == pytest.approx(1000.0, abs=0.01)


def test_the_offset_to_a_moved_point_is_the_move():
    east, north = offset_m(*SHANGHAI, *moved(*SHANGHAI, 300.0, -400.0))
    assert (east, north) == (pytest.approx(300.0), pytest.approx(-400.0))


def test_a_point_in_the_middle_of_the_block_is_inside_it():
    assert in_polygon(31.2305, 121.4740, BLOCK)


@pytest.mark.parametrize("lat, lon", [(31.2330, 121.4740), (31.2280, 121.4740), (31.2305, 121.4770),
                                      (31.2305, 121.4710)], ids=["north", "south", "east", "west"])
def test_a_point_beyond_any_side_of_the_block_is_outside_it(lat, lon):
    assert not in_polygon(lat, lon, BLOCK)


def test_the_distance_to_a_segment_beside_it_is_the_perpendicular():
    # 0.001 degrees of latitude south of the middle of the block's south edge.
    assert segment_distance_m(31.2280, 121.4740, BLOCK[0], BLOCK[1]) == pytest.approx(0.001 * M_PER_DEG_LAT)


def test_the_distance_to_a_segment_past_its_end_is_the_distance_to_that_end():
    lat, lon = 31.2280, 121.4700   # south-west of the south edge's western end
    assert segment_distance_m(lat, lon, BLOCK[0], BLOCK[1]) == pytest.approx(
        distance_m(lat, lon, *BLOCK[0]), rel=1e-4)


def test_a_segment_of_one_point_is_that_point():
    assert segment_distance_m(31.2280, 121.4720, BLOCK[0], BLOCK[0]) == pytest.approx(0.001 * M_PER_DEG_LAT)


def test_the_distance_to_a_polygons_edge_is_to_its_nearest_side_from_outside():
    assert edge_distance_m(31.2330, 121.4740, BLOCK) == pytest.approx(0.001 * M_PER_DEG_LAT)


def test_the_distance_to_a_polygons_edge_is_to_its_nearest_side_from_inside():
    assert edge_distance_m(31.2315, 121.4740, BLOCK) == pytest.approx(0.0005 * M_PER_DEG_LAT)
