"""The ingest core's settings sections ([mqtt], [sink], [store], [ingest]); the composition root
(eldercare/settings.py) assembles them with the other layers' sections into the gateway's settings."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, field_validator, model_validator

from gateway.db import Target
from gateway.decode import DEFAULT_MAX_PAYLOAD
from gateway.tls import TlsFileError, TlsFiles
from gateway.topics import DEFAULT_PREFIX, Topics


class SettingError(ValueError):
    """A check across fields that blames one of them; `setting` is its path within the section."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting, self.reason = setting, reason


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    host: str = Field(default="127.0.0.1", min_length=1, description="Broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port")
    username: str = Field(default="gateway", min_length=1, description="The gateway's own broker account")
    password: SecretStr = Field(
        default=SecretStr(""), description="Password of the gateway's broker account (set it in the environment)",
    )
    client_id: str = Field(
        default="eldercare-gateway", min_length=1, max_length=64,
        description="Base MQTT client id; the persistent sessions are '<id>-telemetry' and '<id>-critical'",
    )
    topic_prefix: str = Field(default=DEFAULT_PREFIX, description="First topic level(s) of every device topic")
    keepalive_s: int = Field(default=30, ge=5, le=600, description="MQTT keepalive")
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=60, le=2**32 - 1,   # MQTT 5 carries it in four bytes
        description="How long the broker keeps the gateway's session (and queues messages) while it is away",
    )
    telemetry_protocol: Literal["5", "3.1.1"] = Field(
        default="3.1.1",
        description="MQTT version of the telemetry session: 3.1.1 is the gateway's own receive-only client "
                    "(about a sixth of paho's CPU per message), 5 is paho's; the critical session (SOS, fall, "
                    "service call) always uses paho with 5",
    )
    receive_maximum: int = Field(
        default=2000, ge=10, le=65535,
        description="QoS 1 messages received and not yet acknowledged, per session: MQTT 5 tells the broker; the 3.1.1 "
                    "telemetry session stops reading until ingest acknowledges some, so a backlog waits in the broker",
    )
    tls_ca_file: FilePath | None = Field(
        default=None,
        description="CA certificate (PEM) the broker's certificate must chain to; setting it connects over TLS "
                    "(the broker's TLS listener, usually port 8883). Unset: plain MQTT, for a broker on this machine",
    )
    tls_cert_file: FilePath | None = Field(
        default=None, description="The gateway's client certificate (PEM), for a listener that requires one",
    )
    tls_key_file: FilePath | None = Field(
        default=None, description="The private key (PEM) of tls_cert_file; readable by the gateway's user only",
    )
    reconnect_min_s: float = Field(default=0.5, gt=0, description="First reconnect delay")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Longest reconnect delay (exponential backoff with jitter)")

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, v: str) -> str:
        Topics(v)
        return v

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Self:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            raise SettingError(missing, "a client certificate needs its key, and a key its certificate")
        if self.tls_cert_file is not None and self.tls_ca_file is None:
            raise SettingError("tls_ca_file", "a client certificate is only sent over TLS: set the CA to verify the broker by")
        if self.tls is not None:
            try:
                self.tls.context()  # fail at start, naming the file, rather than at the first connect
            except TlsFileError as e:
                raise SettingError(f"tls_{e.which}", e.reason) from None
        return self

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files, if the gateway connects over TLS."""
        if self.tls_ca_file is None:
            return None
        return TlsFiles(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)


class SinkSettings(_Section):
    url: str = Field(
        default="http://127.0.0.1:8428", pattern=r"^https?://", description="InfluxDB (2.x/3.x) or VictoriaMetrics base URL",
    )
    token: SecretStr = Field(default=SecretStr(""), description="InfluxDB API token (VictoriaMetrics ignores it)")
    org: str = Field(default="eldercare", description="InfluxDB organisation")
    bucket: str = Field(default="eldercare", description="InfluxDB bucket (database)")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="One write request's timeout (replaying the spool)")
    ack_wait_s: float = Field(
        default=0.5, gt=0, le=120,
        description="How long a batch waits for the store before it goes to the disk spool instead: a store that is "
                    "slow, not down, then holds up no device's acknowledgement (the spool is replayed with timeout_s)",
    )
    spool_dir: Path = Field(default=Path("var/spool"), description="Where points wait, on disk, while the store is unreachable")
    replay_max_backoff_s: float = Field(default=30.0, gt=0, description="Longest wait between attempts to reach the store again")
    rejected_retention_days: float = Field(
        default=30, gt=0, description="How long spooled batches the store refused are kept aside (as *.rejected) for an operator",
    )


class StoreSettings(_Section):
    url: str = Field(
        default="", pattern=r"^(postgres(ql)?://.*)?$",
        description="PostgreSQL database (postgresql://user@host:5432/db) holding the operational store, alerts, outbox "
                    "and device rule state; empty: SQLite files (store.path, alerts.db_path). Keep its password in "
                    "PGPASSWORD or ~/.pgpass, not here",
    )
    path: Path = Field(default=Path("var/gateway.db"), description="SQLite file of the operational store (when url is empty)")
    track_window_h: float = Field(default=48, gt=0, description="How long recent positions are kept for track replay")
    dedup_window_h: float = Field(
        default=7 * 24, gt=0,
        description="How long (device_id, ts, seq) keys are remembered to drop redeliveries (by receive time)",
    )
    dead_letter_retention_days: float = Field(default=30, gt=0, description="How long rejected messages are kept for inspection")

    @property
    def database(self) -> Target:
        """Where the operational store lives: the PostgreSQL URL if set, otherwise the SQLite file."""
        return self.url or self.path


class IngestSettings(_Section):
    max_payload_bytes: int = Field(
        default=DEFAULT_MAX_PAYLOAD, ge=256, le=1_048_576, description="Larger payloads go to dead-letter",
    )
    auto_register: bool = Field(default=False, description="Accept messages from unregistered devices and register them")
    batch_size: int = Field(default=500, ge=1, le=10_000, description="Telemetry messages handled (and acknowledged) together")
    batch_linger_ms: int = Field(default=50, ge=0, le=5_000, description="How long a telemetry batch waits to fill")
    network_process: bool = Field(
        default=True, description="Receive telemetry in a child process, so MQTT and ingest each get a CPU core",
    )
    store_process: bool = Field(
        default=True,
        description="Commit telemetry batches to the operational store in a child process, off the main process's "
                    "core (SQLite; with PostgreSQL the active lock is checked in each commit, so commits stay in "
                    "the gateway process)",
    )
    dead_letter_payload_bytes: int = Field(
        default=1024, ge=0, le=65_536, description="How much of a bad payload dead-letter keeps",
    )
    max_clock_skew_s: float = Field(
        default=600, ge=1, le=86_400,
        description="A message whose device time is further ahead of the gateway's clock is dead-lettered as ts_in_future",
    )


class ExerciseSettings(_Section):
    idle_close_s: float = Field(
        default=300, ge=30, le=7_200,
        description="A session with nothing heard for this long is closed as idle (the machine never said `end`)",
    )
    claim_ttl_s: float = Field(
        default=600, ge=60, le=86_400, description="How long after a session ends its claim code still works",
    )
    claim_url: str = Field(
        default="", description="Start of the link in a machine's QR code (`<public_base_url>/c/` when empty)",
    )


class CoreSettings(Protocol):
    """What the ingest core reads of the whole configuration."""

    @property
    def instance(self) -> str: ...
    @property
    def mqtt(self) -> MqttSettings: ...
    @property
    def sink(self) -> SinkSettings: ...
    @property
    def store(self) -> StoreSettings: ...
    @property
    def ingest(self) -> IngestSettings: ...
    @property
    def exercise(self) -> ExerciseSettings: ...
