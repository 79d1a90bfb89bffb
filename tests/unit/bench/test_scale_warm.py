"""bench/scale.py's warm-up: every watch's series written once to a real VictoriaMetrics before the load."""
from __future__ import annotations

from bench.scale import warm_series
from device_sim.load import FIELD_CADENCE_S, device_id


def test_every_watch_gets_a_point_of_each_stream_in_posts_of_the_given_size(victoria):
    # 7 lines a post: several full posts and a last, partial one, which must not be left behind.
    points, _ = warm_series(victoria, 20, lines_per_post=7)
    assert points == 20 * len(FIELD_CADENCE_S)
    series = [s["metric"] for s in victoria.export('{__name__=~".+"}')]
    assert {labels["device_id"] for labels in series} == {device_id(i) for i in range(20)}
    assert {labels["__name__"].split("_")[0] for labels in series} == set(FIELD_CADENCE_S)
