"""Alert engine settings; the gateway nests them as its `[alerts]` section."""
from __future__ import annotations

from datetime import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from alerts.maps import Datum


class RetryPolicy(BaseModel):
    """How a retryable send failure is retried before it counts as failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(5, ge=1, le=20, description="Sends tried per outbox row, the first included")
    base_delay_s: float = Field(1.0, gt=0, description="Delay before the first retry; doubles each time")
    max_delay_s: float = Field(30.0, gt=0, description="Longest delay between retries")
    jitter: float = Field(0.2, ge=0, le=1, description="Random share added to or taken from each delay")


class TwilioSettings(BaseModel):
    """Twilio account for SMS and calls; all three of sid, token and from number, or the dry-run notifier is used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_sid: str = Field("", pattern=r"^(AC[0-9a-fA-F]{32})?$", description="Account SID (AC + 32 hex digits); empty when not configured")
    auth_token: SecretStr = Field(SecretStr(""), description="Auth token, also the key of webhook signatures (set it in the environment)")
    from_number: str = Field("", pattern=r"^(\+[1-9][0-9]{1,14})?$", description="Sending number in E.164 (+8613...); empty when not configured")
    api_base_url: str = Field("https://api.twilio.com", pattern=r"^https?://", description="REST API root; tests point it at a local mock")
    timeout_s: float = Field(10, gt=0, description="Connect and read timeout of one request to Twilio")

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token.get_secret_value() and self.from_number)


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    db_path: Path = Field(Path("var/alerts.db"), description="SQLite file for alerts, events, processed keys and the outbox")
    community_file: Path = Field(Path("examples/community.toml"), description="TOML community directory (residents, contacts, duty phones)")
    ack_deadline_red_s: float = Field(60, gt=0, description="Seconds a red alert may stay unacknowledged before escalation moves on")
    ack_deadline_orange_s: float = Field(180, gt=0, description="The same for orange alerts")
    red_repeat_rounds: int = Field(
        3, ge=0, le=100, description="After the plan's last step, a red alert nobody accepted goes round the plan's calls again this many times",
    )
    ack_deadline_yellow_s: float = Field(1800, gt=0, description="The same for yellow alerts")
    night_start: time = Field(time(22, 0), description="Local time night begins (geofence exits become red)")
    night_end: time = Field(time(6, 0), description="Local time night ends")
    timezone: str = Field("Asia/Shanghai", description="IANA time zone of the community, for night hours and SMS times")
    geofence_dwell_s: float = Field(120, ge=0, description="How long the wearer must stay outside the geofence before an alert")
    heart_rate_consecutive: int = Field(3, ge=1, description="Readings in a row outside the resident's range before an alert")
    default_heart_rate_range: tuple[int, int] = Field((50, 120), description="Heart-rate range for residents without their own")
    spo2_threshold: int = Field(90, ge=50, le=100, description="SpO2 (%) below which an alert is raised")
    overexertion_share: float = Field(0.85, gt=0, le=1.5, description="Share of (220 - age) above which equipment heart rate alerts")
    battery_low_pct: int = Field(15, ge=0, le=100, description="Battery at or below this (not charging) raises a yellow alert")
    not_worn_s: float = Field(4 * 3600, gt=0, description="Daytime hours a watch may lie unworn before a yellow alert")
    watch_silent_s: float = Field(900, gt=0, description="A worn watch silent this long raises an orange alert")
    equipment_silent_s: float = Field(48 * 3600, gt=0, description="Equipment silent this long raises a yellow maintenance alert")
    session_stall_s: float = Field(120, gt=0, description="An open equipment session without telemetry this long counts as a fault")
    retry: RetryPolicy = Field(RetryPolicy(), description="Retries of retryable send failures")
    unknown_outcome_window_s: float = Field(
        300, gt=0, description="How long to wait for a status callback on an unknown-outcome send before handing it to an operator",
    )
    send_concurrency: int = Field(4, ge=1, le=32, description="Notifications sent at the same time (most urgent first)")
    tick_interval_s: float = Field(1.0, gt=0, le=60, description="How often deadlines and silence rules are checked")
    public_base_url: str = Field(
        "http://127.0.0.1:8000", pattern=r"^https?://", description="Public URL Twilio reaches the webhooks at (signatures are checked against it)",
    )
    map_url_template: str = Field(
        "https://uri.amap.com/marker?position={lon},{lat}", description="Map link in SMS; {lat} and {lon} are filled in",
    )
    map_datum: Datum = Field(
        "gcj02", description="Datum the map in map_url_template expects; AMap/Gaode/Tencent use GCJ-02",
    )
    twilio: TwilioSettings = Field(TwilioSettings(), description="Twilio account; without it notifications are only recorded (dry run)")
    dry_run_log: Path = Field(Path("var/notifications.jsonl"), description="JSON-lines file the dry-run notifier appends each would-be send to")

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        ZoneInfo(v)
        return v

    @model_validator(mode="after")
    def _range_ordered(self):
        lo, hi = self.default_heart_rate_range
        if lo >= hi:
            raise ValueError("default_heart_rate_range must be (low, high) with low < high")
        return self

    def ack_deadline_s(self, severity: str) -> float:
        return {"red": self.ack_deadline_red_s, "orange": self.ack_deadline_orange_s}.get(severity, self.ack_deadline_yellow_s)
