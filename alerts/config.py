"""Alert engine settings; the gateway nests them as its `[alerts]` section."""
from __future__ import annotations

import ipaddress
from datetime import time
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from alerts.maps import Datum
from alerts.vocabulary import Severity
from gateway.config import SettingError
from gateway.models import HeartRate


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is this machine (127.0.0.0/8, ::1, localhost): unreachable from Twilio."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback or ip.is_unspecified


class RetryPolicy(BaseModel):
    """How a retryable send failure is retried before it counts as failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=5, ge=1, le=20, description="Sends tried per outbox row, the first included")
    base_delay_s: float = Field(default=1.0, gt=0, description="Delay before the first retry; doubles each time")
    max_delay_s: float = Field(default=30.0, gt=0, description="Longest delay between retries")
    jitter: float = Field(default=0.2, ge=0, le=1, description="Random share added to or taken from each delay")

    @model_validator(mode="after")
    def _delays_ordered(self) -> Self:
        if self.base_delay_s > self.max_delay_s:
            raise SettingError("base_delay_s", "must not exceed max_delay_s")
        return self


class TwilioSettings(BaseModel):
    """Twilio account for SMS and calls: all three of sid, token and from number, or none (dry run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_sid: str = Field(
        default="", pattern=r"^(AC[0-9a-fA-F]{32})?$", description="Account SID (AC + 32 hex digits); empty when not configured",
    )
    auth_token: SecretStr = Field(
        default=SecretStr(""), description="Auth token, also the key of webhook signatures (set it in the environment)",
    )
    from_number: str = Field(
        default="", pattern=r"^(\+[1-9][0-9]{1,14})?$",
        description="Sending number in E.164 (+8613...); empty when not configured",
    )
    api_base_url: str = Field(
        default="https://api.twilio.com", pattern=r"^https?://", description="REST API root; tests point it at a local mock",
    )
    timeout_s: float = Field(default=10, gt=0, le=120, description="Connect and read timeout of one request to Twilio")

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def missing(self) -> list[str]:
        """The account settings left empty."""
        values = {"account_sid": self.account_sid, "auth_token": self.auth_token.get_secret_value(),
                  "from_number": self.from_number}
        return [name for name, value in values.items() if not value]

    @property
    def configured(self) -> bool:
        return not self.missing


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    db_path: Path = Field(
        default=Path("var/alerts.db"),
        description="SQLite file for alerts, events, processed keys and the outbox (when [store] url is empty)",
    )
    community_file: Path = Field(
        default=Path("examples/community.toml"), description="TOML community directory (residents, contacts, duty phones)",
    )
    ack_deadline_red_s: float = Field(
        default=60, gt=0, description="Seconds a red alert may stay unacknowledged before escalation moves on",
    )
    ack_deadline_orange_s: float = Field(default=180, gt=0, description="The same for orange alerts")
    red_repeat_rounds: int = Field(
        default=3, ge=0, le=100,
        description="After the plan's last step, a red alert nobody accepted goes round the plan's calls again this many times",
    )
    ack_deadline_yellow_s: float = Field(default=1800, gt=0, description="The same for yellow alerts")
    night_start: time = Field(default=time(22, 0), description="Local time night begins (geofence exits become red)")
    night_end: time = Field(default=time(6, 0), description="Local time night ends")
    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone of the community, for night hours and SMS times")
    geofence_dwell_s: float = Field(
        default=120, ge=0, description="How long the wearer must stay outside the geofence before an alert",
    )
    heart_rate_consecutive: int = Field(
        default=3, ge=1, description="Readings in a row outside the resident's range before an alert",
    )
    default_heart_rate_range: tuple[HeartRate, HeartRate] = Field(
        default=(50, 120), description="Heart-rate range (bpm, each end 20..250, low < high) for residents without their own",
    )
    spo2_threshold: int = Field(
        default=90, ge=70, le=100, description="SpO2 (%) below which an alert is raised (a resident may have their own)",
    )
    spo2_consecutive: int = Field(
        default=2, ge=1, le=20, description="SpO2 readings in a row below the threshold before an alert",
    )
    geofence_inside_fixes: int = Field(
        default=2, ge=1, le=20,
        description="Inside fixes in a row that end an outside episode (one stray fix does not reset the dwell)",
    )
    burst_window_s: float = Field(
        default=60, ge=0, le=3600, description="Presses within this long of the press that began a burst count as one press",
    )
    watch_silent_min_s: float = Field(
        default=300, gt=0, description="Shortest silence threshold a watch's learned cadence can give",
    )
    watch_silent_max_s: float = Field(
        default=3600, gt=0, description="Longest silence threshold a watch's learned cadence can give",
    )
    silence_cadence_factor: float = Field(
        default=4, ge=1.5, le=100,
        description="A watch is silent after this many of its usual reporting intervals (within min and max)",
    )
    silence_learn_intervals: int = Field(
        default=5, ge=1, le=1000,
        description="Intervals heard before a watch's cadence is trusted; until then watch_silent_s applies",
    )
    restart_grace_s: float = Field(
        default=120, ge=0, le=3600,
        description="After a start, silence is not judged for this long while the broker's backlog drains",
    )
    state_save_interval_s: float = Field(
        default=10, gt=0, le=600, description="How often devices' last-heard times and rule state are saved for the next start",
    )
    clock_wrong_count: int = Field(
        default=3, ge=1, le=1000,
        description="Messages in a row with a device time too far ahead before a 'device clock wrong' alert",
    )
    processed_window_h: float = Field(
        default=7 * 24, gt=0, description="How long keys of messages that raised findings are remembered",
    )
    audit_retention_days: float = Field(
        default=400, ge=30,
        description="Resolved alerts, their events and notifications are kept this long (service centres are audited)",
    )
    overexertion_share: float = Field(
        default=0.85, gt=0, le=1.5, description="Share of (220 - age) above which equipment heart rate alerts",
    )
    battery_low_pct: int = Field(
        default=15, ge=0, le=100, description="Battery at or below this (not charging) raises a yellow alert",
    )
    not_worn_s: float = Field(default=4 * 3600, gt=0, description="Daytime hours a watch may lie unworn before a yellow alert")
    watch_silent_s: float = Field(
        default=900, gt=0,
        description="A worn watch silent this long raises an orange alert, until its own reporting cadence is learned",
    )
    equipment_silent_s: float = Field(
        default=48 * 3600, gt=0, description="Equipment silent this long raises a yellow maintenance alert",
    )
    sensor_fault_readings: int = Field(
        default=3, ge=1, le=1000,
        description="Equipment readings in a row refused as out of range (a broken sensor) before an equipment fault",
    )
    counter_stuck_readings: int = Field(
        default=60, ge=5, le=3600,
        description="Readings in a row with power reported and the count standing still before an equipment fault",
    )
    retry: RetryPolicy = Field(default=RetryPolicy(), description="Retries of retryable send failures")
    unknown_outcome_window_s: float = Field(
        default=300, gt=0,
        description="How long an unknown-outcome send may stay unsettled (no callback, Twilio's records unreadable) before an "
                    "operator is asked",
    )
    reconcile_after_s: float = Field(
        default=5, ge=0, le=300,
        description="Wait after an unknown-outcome send before asking Twilio's Calls/Messages list whether it arrived",
    )
    reconcile_tries: int = Field(
        default=4, ge=1, le=20, description="Failed requests to Twilio's list API before an unknown outcome goes to an operator",
    )
    send_concurrency: int = Field(
        default=4, ge=1, le=32,
        description="Notifications sent at the same time, most urgent first; one slot is always kept free for red alerts",
    )
    tick_interval_s: float = Field(default=1.0, gt=0, le=60, description="How often deadlines and silence rules are checked")
    silence_sweep_s: float = Field(
        default=30.0, gt=0, le=600,
        description="Every device's silence and other time rules are checked at least this often: each tick checks "
                    "a share of the devices (all of them while there are fewer than 10,000), so a million watches "
                    "cost a thirtieth of a full scan per second",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000", pattern=r"^https?://",
        description="Public URL Twilio reaches the webhooks at (signatures are checked against it)",
    )
    map_url_template: str = Field(
        default="https://uri.amap.com/marker?position={lon},{lat}", description="Map link in SMS; {lat} and {lon} are filled in",
    )
    map_datum: Datum = Field(
        default="gcj02", description="Datum the map in map_url_template expects; AMap/Gaode/Tencent use GCJ-02",
    )
    dry_run: bool = Field(default=False, description="Only record notifications, even when the Twilio account is filled in")
    twilio: TwilioSettings = Field(
        default=TwilioSettings(), description="Twilio account; without it notifications are only recorded (dry run)",
    )
    dry_run_log_retention_days: float = Field(default=30, gt=0, description="How long lines of the dry-run log are kept")
    dry_run_log: Path = Field(
        default=Path("var/notifications.jsonl"), description="JSON-lines file the dry-run notifier appends each would-be send to",
    )

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except (KeyError, ValueError, OSError):   # unknown key, path-like key, directory: all the same to an operator
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("night_end")
    @classmethod
    def _night_has_length(cls, v: time, info: ValidationInfo) -> time:
        if v == info.data.get("night_start"):
            raise ValueError("must differ from night_start (night would be empty)")
        return v

    @field_validator("default_heart_rate_range")
    @classmethod
    def _range_ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] >= v[1]:
            raise ValueError("must be [low, high] with low < high")
        return v

    @model_validator(mode="after")
    def _reconciled_before_an_operator_is_asked(self) -> Self:
        if self.unknown_outcome_window_s <= self.reconcile_after_s:
            raise SettingError("unknown_outcome_window_s", "must exceed reconcile_after_s, or Twilio is never asked")
        return self

    @model_validator(mode="after")
    def _silence_bounds_ordered(self) -> Self:
        if self.watch_silent_min_s > self.watch_silent_max_s:
            raise SettingError("watch_silent_min_s", "must not exceed watch_silent_max_s")
        return self

    @property
    def sends_for_real(self) -> bool:
        """Notifications go out through Twilio (not dry run)."""
        return self.twilio.configured and not self.dry_run

    @model_validator(mode="after")
    def _notifications_can_arrive(self) -> Self:
        t = self.twilio
        if 0 < len(t.missing) < 3 and not self.dry_run:
            raise SettingError("twilio", f"{' and '.join(t.missing)} missing while the rest of the account is set: fill in "
                                         "all three for real calls and SMS, none for a dry run, or set alerts.dry_run = true")
        # A stand-in Twilio on this machine (tests) reaches loopback webhooks; the real one never does.
        if self.sends_for_real and not is_loopback_url(t.api_base_url) and is_loopback_url(self.public_base_url):
            raise SettingError("public_base_url", f"{self.public_base_url} is this machine: Twilio's status callbacks "
                                                  "and press-1 could never arrive; give the URL Twilio reaches the webhooks at")
        return self

    @property
    def device_state_path(self) -> Path:
        """Beside the alert database: devices' last-heard times and rule state, saved for the next start."""
        return self.db_path.with_name(f"{self.db_path.stem}-devices.db")

    def ack_deadline_s(self, severity: Severity | str) -> float:
        deadlines = {Severity.RED: self.ack_deadline_red_s, Severity.ORANGE: self.ack_deadline_orange_s}
        return deadlines.get(Severity(severity), self.ack_deadline_yellow_s)
