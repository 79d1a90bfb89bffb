"""The web layer's settings section ([web])."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WebSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Serve the operator console, the API and Twilio's webhooks")
    host: str = Field(default="127.0.0.1", min_length=1,
                      description="Address to listen on (put a TLS reverse proxy in front for Twilio)")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on")
    db_path: Path = Field(
        default=Path("var/web.db"),
        description="SQLite file of operator accounts, sessions and API tokens (when [store] url is empty)",
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 7,
                                 description="How long a login lasts (a night shift and a handover)")
    cookie_secure: bool = Field(
        default=False, description="Send the session cookie only over HTTPS; set it true when the console is served through TLS",
    )
    tile_url: str = Field(
        default="", description="Map tiles, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png; empty draws maps without tiles",
    )
    tile_datum: Literal["wgs84", "gcj02"] = Field(
        default="wgs84", description="gcj02 for a Chinese tile source (AMap, Tencent), whose tiles are drawn in GCJ-02",
    )
    queue_page_size: int = Field(
        default=200, ge=1, le=100_000,
        description="Alert cards the queue draws before 'Show all'; in a mass event the head of the queue is what gets worked",
    )
    phone_prefix: str = Field(
        default="+86", pattern=r"^\+[1-9][0-9]{0,3}$",
        description="Country code put before a phone number a resident types without one (claiming exercise sessions)",
    )
    metrics_networks: list[str] = Field(
        default=["127.0.0.0/8", "::1/128"],
        description="Networks that may read /metrics without a login (Prometheus' address); anyone else needs a login or token",
    )

    @field_validator("metrics_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for n in value:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                raise ValueError(f"{n!r} is not a network (write e.g. 10.0.0.0/8 or 192.168.1.5)") from None
        return value
