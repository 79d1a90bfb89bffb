"""Builders for tests that need finished exercise sessions in a real operational store (no tests here)."""
from __future__ import annotations

from gateway.models import DeviceKind, DeviceMessage, EquipmentSession, EquipmentType
from gateway.store import OperationalStore

MINUTE = 60_000


def workout(device_id: str, session_id: str, start_ms: int, minutes: int = 10, seq: int = 1,
            equipment_type: EquipmentType = EquipmentType.ROWER) -> list[DeviceMessage]:
    """A machine's `start` and its `end` with the totals, `minutes` apart: a whole session."""
    def event(n: int, ts: int, what: str, **totals: float) -> DeviceMessage:
        return DeviceMessage(device_id, DeviceKind.EQUIPMENT, EquipmentSession(
            ts=ts, seq=n, event=what, session_id=session_id, equipment_type=equipment_type, **totals))
    end_ms = start_ms + minutes * MINUTE
    return [event(seq, start_ms, "start"),
            event(seq + 1, end_ms, "end", elapsed_s=minutes * 60, count=minutes * 20, distance_m=minutes * 100.0,
                  energy_kcal=minutes * 5.0)]


def exercise(store: OperationalStore, device_id: str, session_id: str, start_ms: int, minutes: int = 10,
             resident_id: str | None = None, equipment_type: EquipmentType = EquipmentType.ROWER) -> None:
    """A whole session committed as the ingest commits it, then claimed by `resident_id` if given."""
    end_ms = start_ms + minutes * MINUTE
    news = store.commit_batch(workout(device_id, session_id, start_ms, minutes, equipment_type=equipment_type), [], end_ms)
    if resident_id is not None:
        assert store.claim_session(news[0].claim_code, resident_id, end_ms)
