"""Picks the notifier the settings call for: Twilio when its account is filled in, a dry run when asked or unconfigured.

Settings never reach here with a partly filled account: AlertSettings refuses it
unless `dry_run` is set, so a typo cannot quietly turn real calls into a dry run.
"""
from __future__ import annotations

import logging

from alerts.config import AlertSettings
from alerts.notifiers.base import Notifier
from alerts.notifiers.dryrun import DryRunNotifier
from alerts.notifiers.twilio import TwilioNotifier

log = logging.getLogger(__name__)


def build_notifier(settings: AlertSettings) -> Notifier:
    t = settings.twilio
    if settings.sends_for_real:
        return TwilioNotifier(t.account_sid, t.auth_token.get_secret_value(), t.from_number,
                              api_base_url=t.api_base_url, timeout_s=t.timeout_s)
    why = ("alerts.dry_run = true" if settings.dry_run
           else "Twilio is not configured: alerts.twilio." + ", alerts.twilio.".join(t.missing) + " empty")
    log.warning("%s: notifications are NOT being sent, only recorded in %s", why, settings.dry_run_log)
    return DryRunNotifier(settings.dry_run_log)
