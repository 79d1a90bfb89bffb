"""The topic scheme, parsed and built in one place.

    {prefix}/{watch|equipment}/{device_id}/{stream}   device data
    {prefix}/{watch|equipment}/{device_id}/cmd        commands to the device
    {prefix}/gateway/{instance}/status                gateway online/offline (retained)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.models import DeviceKind

DEFAULT_PREFIX = "eldercare"
COMMAND_STREAM = "cmd"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_KINDS = {k.value: k for k in DeviceKind}


def valid_device_id(device_id: str) -> bool:
    """A device id the topic scheme accepts (also a safe broker username)."""
    return _DEVICE_ID.fullmatch(device_id) is not None


class TopicError(ValueError):
    """A topic that is not in the scheme."""


class DeviceTopic(NamedTuple):
    """A parsed device topic (a tuple: one is made per message, and a tuple is the cheapest to make)."""

    kind: DeviceKind
    device_id: str
    stream: str


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds and parses topics under one prefix."""

    prefix: str = DEFAULT_PREFIX
    _depth: int = field(init=False, repr=False, compare=False)   # levels of a device topic

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.endswith("/"):
            raise ValueError(f"invalid topic prefix {self.prefix!r}")
        object.__setattr__(self, "_depth", self.prefix.count("/") + 4)

    def device(self, kind: DeviceKind | str, device_id: str, stream: str) -> str:
        return f"{self.prefix}/{DeviceKind(kind).value}/{device_id}/{stream}"

    def command(self, kind: DeviceKind | str, device_id: str) -> str:
        return self.device(kind, device_id, COMMAND_STREAM)

    def gateway_status(self, instance: str) -> str:
        return f"{self.prefix}/gateway/{instance}/status"

    def all_device_data(self) -> list[str]:
        """Subscriptions covering every device stream, known or not."""
        return [f"{self.prefix}/{k.value}/+/+" for k in DeviceKind]

    def streams(self, streams: frozenset[str] | set[str]) -> list[str]:
        return [f"{self.prefix}/{DeviceKind.WATCH.value}/+/{s}" for s in sorted(streams)]

    def parse(self, topic: str) -> DeviceTopic:
        """Split a device topic; raises TopicError for anything else."""
        parts = topic.split("/")
        if len(parts) != self._depth or not topic.startswith(self.prefix) or topic[len(self.prefix)] != "/":
            raise TopicError(f"topic {topic!r} is not {self.prefix}/<kind>/<device_id>/<stream>")
        kind, device_id, stream = parts[-3:]
        found = _KINDS.get(kind)
        if found is None:
            raise TopicError(f"unknown device kind {kind!r} in topic {topic!r}")
        if not valid_device_id(device_id):
            raise TopicError(f"invalid device id {device_id!r} in topic {topic!r}")
        return DeviceTopic(found, device_id, stream)

    def is_critical(self, topic: str, critical_streams: frozenset[str]) -> bool:
        """A watch topic of exactly the scheme's depth whose stream is critical."""
        if topic[topic.rfind("/") + 1:] not in critical_streams:   # most topics end here, unsplit
            return False
        parts = topic.split("/")
        return (len(parts) == self._depth and parts[-3] == DeviceKind.WATCH.value
                and topic.startswith(self.prefix + "/"))

    def is_command(self, topic: str) -> bool:
        """A device's command topic of exactly the scheme's depth."""
        if not topic.endswith("/" + COMMAND_STREAM):
            return False
        return len(topic.split("/")) == self._depth and topic.startswith(self.prefix + "/")
