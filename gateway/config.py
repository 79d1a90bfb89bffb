"""Settings: one validated object, read once, from a TOML file plus the environment.

Environment variables override the file: `ELDERCARE_MQTT__PASSWORD=...`
sets `[mqtt] password`. Secrets belong in the environment, not the file.
"""
from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from alerts.config import AlertSettings, SettingError
from gateway.decode import DEFAULT_MAX_PAYLOAD
from gateway.topics import DEFAULT_PREFIX, Topics


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address")
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
        7 * 24 * 3600, ge=60, le=2**32 - 1,   # MQTT 5 carries it in four bytes
        description="How long the broker keeps the gateway's session (and queues messages) while it is away",
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
    rejected_retention_days: float = Field(
        30, gt=0, description="How long spooled batches the store refused are kept aside (as *.rejected) for an operator",
    )


class StoreSettings(_Section):
    path: Path = Field(Path("var/gateway.db"), description="SQLite file of the operational store")
    track_window_h: float = Field(48, gt=0, description="How long recent positions are kept for track replay")
    dedup_window_h: float = Field(
        7 * 24, gt=0, description="How long (device_id, ts, seq) keys are remembered to drop redeliveries (by receive time)",
    )
    dead_letter_retention_days: float = Field(30, gt=0, description="How long rejected messages are kept for inspection")


class IngestSettings(_Section):
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD, ge=256, le=1_048_576, description="Larger payloads go to dead-letter")
    auto_register: bool = Field(False, description="Accept messages from unregistered devices and register them")
    batch_size: int = Field(500, ge=1, le=10_000, description="Telemetry messages handled (and acknowledged) together")
    batch_linger_ms: int = Field(50, ge=0, le=5_000, description="How long a telemetry batch waits to fill")
    network_process: bool = Field(
        True, description="Receive telemetry in a child process, so MQTT and ingest each get a CPU core",
    )
    dead_letter_payload_bytes: int = Field(1024, ge=0, le=65_536, description="How much of a bad payload dead-letter keeps")
    max_clock_skew_s: float = Field(
        600, ge=1, le=86_400,
        description="A message whose device time is further ahead of the gateway's clock is dead-lettered as ts_in_future",
    )


MIN_API_TOKEN_CHARS = 32


class WebSettings(_Section):
    enabled: bool = Field(True, description="Serve Twilio's webhooks and the operator API")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (put a TLS reverse proxy in front for Twilio)")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on")
    api_token: SecretStr = Field(
        SecretStr(""), description=f"Bearer token for the operator API, at least {MIN_API_TOKEN_CHARS} characters; empty keeps it closed",
    )

    @field_validator("api_token")
    @classmethod
    def _too_long_to_guess(cls, v: SecretStr) -> SecretStr:
        # The token alone lets anyone acknowledge an SOS; a short one can be guessed.
        if 0 < len(v.get_secret_value()) < MIN_API_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_API_TOKEN_CHARS} characters (or empty, which keeps the operator API closed)")
        return v


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
            raise SettingError("ingest.batch_size", "must not exceed mqtt.receive_maximum")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # The file's values arrive as init arguments; the environment wins over them.
        return (env_settings, init_settings)


ENV_PREFIX = "ELDERCARE_"
# The device simulator's own variables (ELDERCARE_SIM_PASSWORD) share the prefix; no setting starts with `sim_`.
_SIMULATOR_PREFIX = "ELDERCARE_SIM_"


class ConfigError(Exception):
    """The configuration cannot be used; one line per problem, each naming the setting."""


def _setting_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every `__`-joined path an environment variable may name: the sections and the settings in them."""
    paths = set()
    for name, field in model.model_fields.items():
        paths.add(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths |= _setting_paths(field.annotation, f"{prefix}{name}__")
    return paths


def _unknown_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """ELDERCARE_* variables that name no setting, by `__`-joined path; outside a known
    section pydantic-settings would ignore them without a word."""
    known = _setting_paths(Settings)
    problems = {}
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_SIMULATOR_PREFIX):
            continue
        path = upper.removeprefix(ENV_PREFIX).lower()
        if path not in known:
            guess = difflib.get_close_matches(path, known, n=1)
            problems[path] = f"{name}: names no setting" + (f" (did you mean {ENV_PREFIX}{guess[0].upper()}?)" if guess else "")
    return problems


def _validation_problems(error: ValidationError, unknown_variables: dict[str, str]) -> list[str]:
    """One `setting: reason` line per error, the setting's full dotted path first."""
    problems = []
    for err in error.errors(include_url=False):
        where = [str(p) for p in err["loc"]]
        if err["type"] == "extra_forbidden" and "__".join(where).lower() in unknown_variables:
            continue   # already named as the variable it came from
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, SettingError):
            where.append(cause.setting)
            reason = cause.reason
        else:
            reason = str(cause) if err["type"] == "value_error" else err["msg"]
        problems.append(f"{'.'.join(where)}: {reason}" if where else reason)
    return problems


def _read_file(config_file: Path) -> dict:
    try:
        return tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {config_file} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {config_file}: {e}") from None


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the TOML file (if any) and the environment; raise ConfigError naming every bad setting."""
    from_file = _read_file(config_file) if config_file is not None else {}
    unknown = _unknown_variables(os.environ)
    problems = list(unknown.values())
    try:
        settings = Settings(**from_file)
    except ValidationError as e:
        problems += _validation_problems(e, unknown)
    except SettingsError as e:   # an environment value that is not the JSON a list or section needs
        problems.append(f"{e} (a list or a whole section in one variable must be JSON, e.g. [50, 120])")
    if problems:
        raise ConfigError("\n".join(f"invalid configuration: {p}" for p in problems))
    return settings
