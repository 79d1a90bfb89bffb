"""What notifications say: the wording module's functions, or plain fallbacks until it is present."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

try:  # alerts/wording.py is written alongside; the fallbacks keep the engine usable without it.
    from alerts.wording import alert_sms, call_text, follow_up_sms
except ImportError:  # pragma: no cover - replaced once wording.py lands
    def alert_sms(resident_name, alert_type, severity, at_ms, lat, lon, *, language, tz, map_url_template) -> str:
        when = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(tz)).strftime("%H:%M")
        where = f" {map_url_template.format(lat=lat, lon=lon)}" if lat is not None else ""
        return f"[{severity}] {resident_name}: {alert_type} at {when}.{where}"

    def follow_up_sms(resident_name, alert_type, outcome, by, at_ms, *, language, tz) -> str:
        when = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(tz)).strftime("%H:%M")
        return f"{resident_name}: {alert_type} {outcome} by {by} at {when}."

    def call_text(resident_name, alert_type, severity, *, language) -> str:
        return f"{severity} alert for {resident_name}: {alert_type}. Press 1 to accept."

__all__ = ["alert_sms", "call_text", "follow_up_sms"]
