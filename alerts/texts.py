"""What notifications say: the engine's name for alerts.wording."""
from alerts.wording import alert_sms, call_text, follow_up_sms

__all__ = ["alert_sms", "call_text", "follow_up_sms"]
