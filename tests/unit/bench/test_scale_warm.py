"""bench/scale.py's warm-up: every watch's series written once to a real VictoriaMetrics before the load."""
from __future__ import annotations

import time
import urllib.parse
import urllib.request

import orjson

from bench.scale import warm_series
from device_sim.load import FIELD_CADENCE_S, device_id


def label_values(url: str, label: str) -> set[str]:
    q = urllib.parse.urlencode({"start": int(time.time()) - 3 * 86_400})
    with urllib.request.urlopen(f"{url}/api/v1/label/{label}/values?{q}", timeout=10) as r:
        return set(orjson.loads(r.read())["data"])


def test_every_watch_gets_a_point_of_each_stream_in_posts_of_the_given_size(victoria):
    # 7 lines a post: several full posts and a last, partial one, which must not be left behind.
    points, _ = warm_series(victoria, 20, lines_per_post=7)
    assert points == 20 * len(FIELD_CADENCE_S)
    urllib.request.urlopen(f"{victoria.url}/internal/force_flush", timeout=10).read()
    assert label_values(victoria.url, "device_id") == {device_id(i) for i in range(20)}
    measurements = {name.split("_")[0] for name in label_values(victoria.url, "__name__")}
    assert measurements == set(FIELD_CADENCE_S)
