"""How bench/compare.py counts lost and doubled messages from the store's points."""
from __future__ import annotations

from bench.compare import tally


def test_one_point_per_message_is_neither_lost_nor_doubled() -> None:
    t = tally({"w1": 2, "w2": 1}, [("location_seq", "w1", 10, 1.0), ("health_seq", "w1", 20, 2.0),
                                   ("status_seq", "w2", 10, 1.0)])
    assert (t.published, t.stored, t.lost, t.doubled, t.unknown) == (3, 3, 0, 0, 0)


def test_a_second_point_at_another_time_is_a_double_and_the_same_point_twice_is_not() -> None:
    points = [("location_seq", "w1", 10, 1.0), ("location_seq", "w1", 10, 1.0),   # the store's one point, exported twice
              ("location_seq", "w1", 99, 1.0)]                                     # a redelivery stamped on arrival
    t = tally({"w1": 2}, points)
    assert (t.stored, t.lost, t.doubled) == (1, 1, 1)


def test_points_nobody_published_are_counted_apart() -> None:
    t = tally({"w1": 1}, [("location_seq", "w1", 10, 1.0), ("location_seq", "w9", 10, 1.0), ("status_seq", "w1", 11, 7.0)])
    assert (t.stored, t.lost, t.doubled, t.unknown) == (1, 0, 0, 2)
