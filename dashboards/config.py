"""The web layer's settings section ([web])."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

MIN_API_TOKEN_CHARS = 32


class WebSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Serve Twilio's webhooks and the operator API")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (put a TLS reverse proxy in front for Twilio)")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on")
    api_token: SecretStr = Field(
        SecretStr(""),
        description=f"Bearer token for the operator API, at least {MIN_API_TOKEN_CHARS} characters; empty keeps it closed",
    )

    @field_validator("api_token")
    @classmethod
    def _too_long_to_guess(cls, v: SecretStr) -> SecretStr:
        # The token alone lets anyone acknowledge an SOS; a short one can be guessed.
        if 0 < len(v.get_secret_value()) < MIN_API_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_API_TOKEN_CHARS} characters (or empty, which keeps the operator API closed)")
        return v
