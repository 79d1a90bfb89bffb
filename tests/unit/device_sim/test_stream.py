"""The generated stream: deterministic, decodable, numbered per device, with the scripted mishaps."""
from __future__ import annotations

import itertools
import json

import pytest

from device_sim.malformed import MALFORMED_KINDS, malformed_payload
from device_sim.scenario import load_scenario, parse_scenario, scenario_names
from device_sim.stream import generate, window
from gateway.decode import Rejection, decode
from gateway.models import DeviceMessage
from gateway.topics import Topics

START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
TOPICS = Topics()


def _stream(scenario, seed=1, start_ms=START_MS):
    return list(generate(scenario, seed, start_ms))


def _scenario_with(events: str):
    return parse_scenario('duration = "30m"\nstart_time = "09:00"\n[fleet]\nwatches = 1\nequipment = ["walker"]\n'
                          + events)


def test_the_same_seed_gives_the_same_stream():
    demo = load_scenario("demo")
    assert _stream(demo, seed=42) == _stream(demo, seed=42)


def test_a_different_seed_gives_a_different_stream():
    demo = load_scenario("demo")
    assert _stream(demo, seed=42) != _stream(demo, seed=43)


def test_the_start_time_moves_every_ts_and_nothing_else():
    scenario = load_scenario("sos_and_fall")
    a, b = _stream(scenario, start_ms=START_MS), _stream(scenario, start_ms=START_MS + 5_000)
    assert [(e.t_ms, e.topic) for e in a] == [(e.t_ms, e.topic) for e in b]
    for early, late in zip(a, b, strict=True):
        assert json.loads(late.payload)["ts"] == json.loads(early.payload)["ts"] + 5_000


def test_messages_come_in_time_order_at_qos_1_and_ts_is_start_plus_offset():
    stream = _stream(_scenario_with(""))
    assert [e.t_ms for e in stream] == sorted(e.t_ms for e in stream)
    assert {e.qos for e in stream} == {1}
    for e in stream:
        assert json.loads(e.payload)["ts"] == START_MS + e.t_ms


@pytest.mark.parametrize("name", scenario_names())
def test_every_message_decodes_except_the_scripted_malformed_ones(name):
    scenario = load_scenario(name)
    malformed = sum(1 for e in scenario.events if e.action == "malformed")
    results = [decode(TOPICS, e.topic, e.payload) for e in _stream(scenario)]
    rejected = [r for r in results if isinstance(r, Rejection)]
    assert len(rejected) == malformed, rejected
    assert sum(isinstance(r, DeviceMessage) for r in results) == len(results) - malformed


def test_seq_counts_from_1_per_device_without_gaps_when_nothing_is_redelivered():
    by_device: dict[str, list[int]] = {}
    for e in _stream(load_scenario("sos_and_fall")):
        by_device.setdefault(e.topic.split("/")[2], []).append(json.loads(e.payload)["seq"])
    assert set(by_device) == {"watch-0001", "watch-0002"}
    for seqs in by_device.values():
        assert seqs == list(range(1, len(seqs) + 1))


def test_sos_pressed_again_is_two_sos_messages_with_their_own_seq():
    sos = [e for e in _stream(load_scenario("sos_and_fall")) if e.topic == "eldercare/watch/watch-0001/sos"]
    assert [e.t_ms for e in sos] == [60_000, 90_000]
    first, second = (decode(TOPICS, e.topic, e.payload) for e in sos)
    assert second.payload.seq > first.payload.seq
    assert first.payload.lat is not None and first.payload.accuracy_m > 0


def test_a_duplicate_is_the_previous_message_again_byte_for_byte():
    stream = _stream(_scenario_with('[[events]]\nat = "10m"\ndevice = "watch-0001"\naction = "duplicate"\n'))
    watch = [e for e in stream if "/watch-0001/" in e.topic]
    i = next(i for i, e in enumerate(watch) if e.t_ms == 600_000)
    assert (watch[i].topic, watch[i].payload) == (watch[i - 1].topic, watch[i - 1].payload)


def test_an_out_of_order_redelivery_repeats_an_older_seq_after_newer_ones():
    stream = _stream(_scenario_with('[[events]]\nat = "20m"\ndevice = "watch-0001"\naction = "out_of_order"\n'
                                    'back = 2\n'))
    seqs = [json.loads(e.payload)["seq"] for e in stream if "/watch-0001/" in e.topic]
    late = next(i for i, (a, b) in enumerate(itertools.pairwise(seqs)) if b < a) + 1
    assert seqs[late] == seqs[late - 1] - 2
    assert seqs[:late] == list(range(1, late + 1))


def test_a_silent_device_sends_nothing_for_the_duration_and_then_carries_on():
    stream = _stream(_scenario_with('[[events]]\nat = "5m"\ndevice = "walker-01"\naction = "silent"\n'
                                    'duration = "20m"\n'))
    walker = [e.t_ms for e in stream if "/walker-01/" in e.topic]
    assert not [t for t in walker if 300_000 <= t < 1_500_000]
    quiet = _stream(_scenario_with(""))
    assert [t for t in (e.t_ms for e in quiet if "/walker-01/" in e.topic) if 300_000 <= t < 1_500_000]


def _numbered(stream, device: str) -> list[tuple[int, int, int]]:
    """(t_ms, ts, seq) of each message from `device`."""
    return [(e.t_ms, body["ts"], body["seq"]) for e in stream if f"/{device}/" in e.topic
            for body in [json.loads(e.payload)]]


def test_a_rebooted_device_counts_from_1_again_while_its_clock_goes_on():
    sent = _numbered(_stream(_scenario_with('[[events]]\nat = "10m"\ndevice = "watch-0001"\naction = "reboot"\n')),
                     "watch-0001")
    before = [seq for t, _, seq in sent if t < 600_000]
    after = [seq for t, _, seq in sent if t >= 600_000]
    assert before == list(range(1, len(before) + 1)) and len(before) > 1
    assert after == list(range(1, len(after) + 1))
    assert [ts for _, ts, _ in sent] == sorted(ts for _, ts, _ in sent)


def test_a_press_at_the_moment_of_a_reboot_is_the_first_message_of_the_new_count():
    stream = _stream(_scenario_with('[[events]]\nat = "10m"\ndevice = "watch-0001"\naction = "reboot"\n'
                                    '[[events]]\nat = "10m"\ndevice = "watch-0001"\naction = "sos"\n'))
    (sos,) = [e for e in stream if e.topic.endswith("/watch-0001/sos")]
    assert json.loads(sos.payload)["seq"] == 1


def test_a_clock_jump_moves_ts_ahead_for_its_duration_only():
    stream = _stream(_scenario_with('[[events]]\nat = "5m"\ndevice = "watch-0001"\naction = "clock_jump"\n'
                                    'ahead = "8h"\nduration = "10m"\n'))
    watch = _numbered(stream, "watch-0001")
    for t, ts, _ in watch:
        assert ts == START_MS + t + (8 * 3_600_000 if 300_000 <= t < 900_000 else 0)
    assert any(300_000 <= t < 900_000 for t, _, _ in watch) and any(t >= 900_000 for t, _, _ in watch)
    assert [seq for _, _, seq in watch] == list(range(1, len(watch) + 1))
    assert all(json.loads(e.payload)["ts"] == START_MS + e.t_ms for e in stream if "/walker-01/" in e.topic)


def test_windows_played_one_after_another_are_the_whole_stream_timed_from_their_own_start():
    whole = _stream(load_scenario("demo"))
    parts = [list(window(iter(whole), a, b)) for a, b in ((0, 120_000), (120_000, 600_000), (600_000, None))]
    starts = (0, 120_000, 600_000)
    assert [e._replace(t_ms=e.t_ms + start) for part, start in zip(parts, starts, strict=True) for e in part] == whole
    assert all(0 <= e.t_ms < 480_000 for e in parts[1])


@pytest.mark.parametrize("device_kind, kind", [(dk, k) for dk, kinds in MALFORMED_KINDS.items() for k in sorted(kinds)])
def test_each_malformed_kind_is_rejected_by_the_gateway(device_kind, kind):
    stream, payload = malformed_payload(device_kind, kind, START_MS, 7)
    verdict = decode(TOPICS, TOPICS.device(device_kind, "dev-1", stream), payload)
    expected = {"bad_json": "bad_json", "not_an_object": "not_an_object", "missing_ts": "missing_field",
                "missing_seq": "missing_field", "unknown_stream": "unknown_stream"}.get(kind, "invalid_field")
    assert isinstance(verdict, Rejection) and verdict.reason == expected
