"""Picks the notifier the settings call for: Twilio when its account is complete, otherwise a dry run."""
from __future__ import annotations

import logging

from alerts.config import AlertSettings
from alerts.notifiers.base import Notifier
from alerts.notifiers.dryrun import DryRunNotifier
from alerts.notifiers.twilio import TwilioNotifier

log = logging.getLogger(__name__)


def build_notifier(settings: AlertSettings) -> Notifier:
    t = settings.twilio
    if t.configured:
        return TwilioNotifier(t.account_sid, t.auth_token.get_secret_value(), t.from_number,
                              api_base_url=t.api_base_url, timeout_s=t.timeout_s)
    missing = [name for name, value in (("account_sid", t.account_sid), ("auth_token", t.auth_token.get_secret_value()),
                                        ("from_number", t.from_number)) if not value]
    log.warning("Twilio is not configured (missing alerts.twilio.%s): notifications are NOT being sent, only recorded in %s",
                ", alerts.twilio.".join(missing), settings.dry_run_log)
    return DryRunNotifier(settings.dry_run_log)
