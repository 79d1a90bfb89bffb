"""Per-device rule state stays small: 100,000 devices well under 200 MB (a size bound, not a timing)."""
from __future__ import annotations

import tracemalloc

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
    # Slotted state: no per-instance __dict__.
    assert not hasattr(next(iter(watches.values())), "__dict__")
