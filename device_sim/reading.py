"""What a simulated device wants to say, before it gets a sequence number and a timestamp."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.models import DevicePayload

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Reading:
    """A payload's fields at `t_ms` after the start; the device adds `ts` and `seq`."""

    t_ms: int
    model: type[DevicePayload]
    fields: Mapping[str, Any]   # the model's own fields, checked when the device builds it


def hour_of_day(start_time_s: float, t_ms: int) -> float:
    """Local hour (0-24) at offset `t_ms` of a scenario that starts at `start_time_s` past midnight."""
    return ((start_time_s * 1000 + t_ms) % DAY_MS) / 3_600_000
