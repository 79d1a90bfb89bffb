"""Settings: one validated object, read once, from a TOML file plus the environment.

Environment variables override the file: `ELDERCARE_MQTT__PASSWORD=...`
sets `[mqtt] password`. Secrets belong in the environment, not the file.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from alerts.config import AlertSettings
from gateway.decode import DEFAULT_MAX_PAYLOAD
from gateway.topics import DEFAULT_PREFIX, Topics


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    host: str = Field("127.0.0.1", description="Broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="Broker port")
    username: str = Field("gateway", min_length=1, description="The gateway's own broker account")
    password: SecretStr = Field(SecretStr(""), description="Password of the gateway's broker account (set it in the environment)")
    client_id: str = Field(
        "eldercare-gateway", min_length=1, max_length=64,
        description="Base MQTT client id; the persistent sessions are '<id>-telemetry' and '<id>-critical'",
    )
    topic_prefix: str = Field(DEFAULT_PREFIX, description="First topic level(s) of every device topic")
    keepalive_s: int = Field(30, ge=5, le=600, description="MQTT keepalive")
    session_expiry_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long the broker keeps the gateway's session (and queues messages) while it is away",
    )
    receive_maximum: int = Field(2000, ge=10, le=65535, description="QoS 1 messages the broker may have in flight to the gateway")
    shared_group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$",
        description="If set, subscribe as $share/<group>/... so several gateway processes split the work",
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay (exponential backoff with jitter)")

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, v: str) -> str:
        Topics(v)
        return v

    @model_validator(mode="after")
    def _backoff_ordered(self):
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


class SinkSettings(_Section):
    url: str = Field("http://127.0.0.1:8428", pattern=r"^https?://", description="InfluxDB (2.x/3.x) or VictoriaMetrics base URL")
    token: SecretStr = Field(SecretStr(""), description="InfluxDB API token (VictoriaMetrics ignores it)")
    org: str = Field("eldercare", description="InfluxDB organisation")
    bucket: str = Field("eldercare", description="InfluxDB bucket (database)")
    timeout_s: float = Field(10.0, gt=0, le=120, description="One write request's timeout")
    spool_dir: Path = Field(Path("var/spool"), description="Where points wait, on disk, while the store is unreachable")
    replay_max_backoff_s: float = Field(30.0, gt=0, description="Longest wait between attempts to reach the store again")


class StoreSettings(_Section):
    path: Path = Field(Path("var/gateway.db"), description="SQLite file of the operational store")
    track_window_h: float = Field(48, gt=0, description="How long recent positions are kept for track replay")
    dedup_window_h: float = Field(7 * 24, gt=0, description="How long (device_id, seq) keys are remembered to drop redeliveries")


class IngestSettings(_Section):
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD, ge=256, le=1_048_576, description="Larger payloads go to dead-letter")
    auto_register: bool = Field(False, description="Accept messages from unregistered devices and register them")
    batch_size: int = Field(500, ge=1, le=10_000, description="Telemetry messages handled (and acknowledged) together")
    batch_linger_ms: int = Field(50, ge=0, le=5_000, description="How long a telemetry batch waits to fill")
    network_process: bool = Field(
        True, description="Receive telemetry in a child process, so MQTT and ingest each get a CPU core",
    )
    dead_letter_payload_bytes: int = Field(1024, ge=0, le=65_536, description="How much of a bad payload dead-letter keeps")


class WebSettings(_Section):
    enabled: bool = Field(True, description="Serve Twilio's webhooks and the operator API")
    host: str = Field("127.0.0.1", description="Address to listen on (put a TLS reverse proxy in front for Twilio)")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on")
    api_token: SecretStr = Field(SecretStr(""), description="Bearer token for the operator API; empty keeps it closed")


class Settings(BaseSettings):
    """Everything the gateway reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="ELDERCARE_", env_nested_delimiter="__", extra="forbid", frozen=True,
    )

    instance: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")] = Field(
        "gw1", description="Name of this gateway process (status topic, logs)",
    )
    mqtt: MqttSettings = MqttSettings()
    sink: SinkSettings = SinkSettings()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()
    alerts: AlertSettings = AlertSettings()
    web: WebSettings = WebSettings()

    @model_validator(mode="after")
    def _inflight_leaves_room_for_a_batch(self):
        # The broker stops sending once receive_maximum messages wait for our
        # ack; a batch that needs more than that would only ever fill by timeout.
        if self.ingest.batch_size > self.mqtt.receive_maximum:
            raise ValueError("ingest.batch_size must not exceed mqtt.receive_maximum")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # The file's values arrive as init arguments; the environment wins over them.
        return (env_settings, init_settings)


class ConfigError(Exception):
    """The configuration cannot be used; the message names every bad setting."""


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the TOML file (if any) and the environment; raise ConfigError naming bad settings."""
    from_file: dict = {}
    if config_file is not None:
        try:
            from_file = tomllib.loads(Path(config_file).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"cannot read {config_file}: {e}") from None
    try:
        return Settings(**from_file)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"  {where}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from None
