"""Settings: one validated object, read once, from a TOML file plus the environment.

Each layer defines its own sections (gateway/config.py, alerts/config.py, dashboards/config.py);
they are assembled here. Environment variables override the file: `ELDERCARE_MQTT__PASSWORD=...`
sets `[mqtt] password`. Secrets belong in the environment, not the file.
"""
from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from alerts.config import AlertSettings
from dashboards.config import WebSettings
from gateway.config import ExerciseSettings, IngestSettings, MqttSettings, SettingError, SinkSettings, StoreSettings
from gateway.db import Target


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["text", "json"] = Field(
        default="text", description="text: lines for a person; json: one object per line for a log collector",
    )


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
    exercise: ExerciseSettings = ExerciseSettings()
    alerts: AlertSettings = AlertSettings()
    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()

    @property
    def accounts_database(self) -> Target:
        """Where operator accounts live: the PostgreSQL store if there is one, otherwise their own SQLite file."""
        return self.store.url or self.web.db_path

    @property
    def alerts_database(self) -> Target:
        """Where alerts and the outbox live: the PostgreSQL store if there is one, otherwise their SQLite file."""
        return self.store.url or self.alerts.db_path

    @model_validator(mode="after")
    def _claim_links_follow_the_public_address(self) -> Self:
        if not self.exercise.claim_url:
            url = f"{self.alerts.public_base_url.rstrip('/')}/c/"
            object.__setattr__(self, "exercise", self.exercise.model_copy(update={"claim_url": url}))
        return self

    @model_validator(mode="after")
    def _inflight_leaves_room_for_a_batch(self) -> Self:
        # The broker stops sending once receive_maximum messages wait for our
        # ack; a batch that needs more than that would only ever fill by timeout.
        if self.ingest.batch_size > self.mqtt.receive_maximum:
            raise SettingError("ingest.batch_size", "must not exceed mqtt.receive_maximum")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
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


# Settings that existed once, with what replaced them: an upgraded install is told, not left guessing.
RETIRED = {
    "web__api_token": "the shared operator token is gone; create a named API token on the console's Admin page "
                      "or with `eldercare-gateway create-token NAME`",
    "mqtt__shared_group": "splitting the messages between gateway processes is gone: Mosquitto deals one watch's "
                          "messages round-robin to different processes, whose rule state then diverges (doubled "
                          "alerts and calls), and a device that joins the group takes SOS messages the broker "
                          "then drops. Run one active gateway with a standby instead (README, 'Several gateway "
                          "processes'; docs/SCALING.md for hash-routed slices)",
    "alerts__session_stall_s": "a session that stops without `end` is not a fault any more: it closes after "
                               "[exercise] idle_close_s; a broken counter is found by [alerts] counter_stuck_readings",
}


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
        if path in RETIRED:
            problems[path] = f"{name}: {RETIRED[path]}"
        elif path not in known:
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
        if err["type"] == "extra_forbidden" and "__".join(where) in RETIRED:
            problems.append(f"{'.'.join(where)}: {RETIRED['__'.join(where)]}")
            continue
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, SettingError):
            where.append(cause.setting)
            reason = cause.reason
        else:
            reason = str(cause) if err["type"] == "value_error" else err["msg"]
        problems.append(f"{'.'.join(where)}: {reason}" if where else reason)
    return problems


def _read_file(config_file: Path) -> dict[str, Any]:
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
