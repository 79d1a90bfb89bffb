"""Per-device rule state stays small: 100,000 devices well under 200 MB (a size bound, not a timing)."""
from __future__ import annotations

import gc
import tracemalloc

from alerts.detection import StateTable
from alerts.rules import EquipmentState, WatchState, watch_seen
from tests.unit.alert_support import DAY, msg


def test_rule_state_for_100k_devices_fits_in_200_mb():
    status = msg("w", "status", 1, DAY, battery=80, worn=True)
    tracemalloc.start()
    try:
        watches = {f"watch-{i:06d}": watch_seen(WatchState(lat=31.0 + i * 1e-6, lon=121.0), status, DAY + i)
                   for i in range(90_000)}
        equipment = {f"eq-{i:05d}": EquipmentState(last_seen_ms=DAY + i, session_id=f"s{i}") for i in range(10_000)}
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(watches) + len(equipment) == 100_000
    assert used < 200 * 1024 * 1024
    # Tuples: no per-instance __dict__.
    assert not hasattr(next(iter(watches.values())), "__dict__")


def test_rule_state_tables_leave_nothing_for_the_garbage_collector_to_walk():
    """A full collection walks every tracked object with the whole process stopped; 20,000 devices' states
    must not add to them (as objects, each state was one more)."""
    status = msg("w", "status", 1, DAY, battery=80, worn=True)
    watches, machines = StateTable(WatchState), StateTable(EquipmentState)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        watches[f"watch-{i}"] = watch_seen(WatchState(lat=31.0, lon=121.0), status, DAY + i)
        machines[f"eq-{i}"] = EquipmentState(last_seen_ms=DAY, session_id=f"s{i}", claimed_by="r-1")
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert watches["watch-9"].last_seen_ms == DAY + 9 and machines["eq-9"].session_id == "s9"
