"""Builds what reacts to accepted messages (the alert engine) from the settings."""
from __future__ import annotations

from gateway.config import Settings
from gateway.observer import MessageObserver


def build_observer(settings: Settings) -> MessageObserver | None:
    return None
