"""The disk spool: whole batches, replayed in the order written, surviving a crash mid-write."""
from __future__ import annotations

from gateway.spool import Spool

LINES_A = ["location,device_id=w1,kind=watch lat=1.0 1767225600000", "status,device_id=w1,kind=watch battery=80i 1767225600001"]
LINES_B = ["health,device_id=w2,kind=watch heart_rate=72i 1767225600002"]


def test_an_empty_spool_has_nothing_to_replay(tmp_path):
    spool = Spool(tmp_path)
    assert spool.oldest() is None
    assert len(spool) == 0


def test_an_appended_batch_comes_back_whole_and_in_order(tmp_path):
    spool = Spool(tmp_path)
    spool.append(LINES_A)
    _, lines = spool.oldest()
    assert lines == LINES_A


def test_batches_replay_in_the_order_they_were_written(tmp_path):
    spool = Spool(tmp_path)
    spool.append(LINES_A)
    spool.append(LINES_B)
    first, first_lines = spool.oldest()
    spool.remove(first)
    _, second_lines = spool.oldest()
    assert (first_lines, second_lines) == (LINES_A, LINES_B)


def test_the_order_holds_past_ten_batches(tmp_path):
    # File names must sort numerically, not as text ("10" before "2").
    spool = Spool(tmp_path)
    for n in range(12):
        spool.append([f"m,device_id=w1 n={n}i {n}"])
    replayed = []
    while (oldest := spool.oldest()) is not None:
        replayed += oldest[1]
        spool.remove(oldest[0])
    assert replayed == [f"m,device_id=w1 n={n}i {n}" for n in range(12)]


def test_removing_a_batch_leaves_the_rest(tmp_path):
    spool = Spool(tmp_path)
    spool.append(LINES_A)
    spool.append(LINES_B)
    spool.remove(spool.oldest()[0])
    assert (len(spool), spool.line_count()) == (1, 1)


def test_a_half_written_batch_left_by_a_crash_is_discarded_on_open(tmp_path):
    Spool(tmp_path).append(LINES_A)
    (tmp_path / "0000000000000002.tmp").write_text("location,device_id=w1,kind=watch lat=")
    spool = Spool(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    assert (len(spool), spool.oldest()[1]) == (1, LINES_A)


def test_numbering_continues_after_reopening(tmp_path):
    Spool(tmp_path).append(LINES_A)
    reopened = Spool(tmp_path)
    reopened.append(LINES_B)
    segments = sorted(p.name for p in tmp_path.glob("*.lp"))
    assert segments == ["0000000000000001.lp", "0000000000000002.lp"]
    assert reopened.oldest()[1] == LINES_A


def test_a_reopened_spool_numbers_after_its_newest_batch_even_when_older_ones_were_replayed(tmp_path):
    spool = Spool(tmp_path)
    spool.append(LINES_A)
    spool.append(LINES_B)
    spool.remove(spool.oldest()[0])
    Spool(tmp_path).append(LINES_A)
    assert sorted(p.name for p in tmp_path.glob("*.lp")) == ["0000000000000002.lp", "0000000000000003.lp"]


def test_batches_the_store_refused_are_pruned_after_their_retention(tmp_path):
    import os

    spool = Spool(tmp_path)
    old, recent = tmp_path / "0000000000000001.rejected", tmp_path / "0000000000000002.rejected"
    for path in (old, recent):
        path.write_text("bad line\n")
    os.utime(old, (1_000, 1_000))
    os.utime(recent, (90_000, 90_000))
    assert spool.prune_rejected(now_s=100_000, keep_s=86_400) == 1
    assert not old.exists() and recent.exists()
