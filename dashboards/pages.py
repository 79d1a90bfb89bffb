"""Server-rendered pages: the Jinja2 environment, its filters and the one `render` every page route uses."""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


@lru_cache(maxsize=8)
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def clock(ms: int | None, tz: str, with_date: bool = False) -> str:
    """A wall-clock time in the community's zone: "14:02:05", or "11-27 14:02" with the date."""
    if not ms:
        return "—"
    when = datetime.fromtimestamp(ms / 1000, _zone(tz))
    return when.strftime("%m-%d %H:%M" if with_date else "%H:%M:%S")


def ago(ms: int | None, now_ms: int) -> str:
    """"40 s ago", "12 min ago", "3 h ago", "2 d ago"."""
    if not ms:
        return "never"
    s = max(0, (now_ms - ms) // 1000)
    if s < 90:
        return f"{s} s ago"
    if s < 90 * 60:
        return f"{s // 60} min ago"
    if s < 36 * 3600:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page or fragment; every template sees the acting operator (if any) and the community's name and zone."""
    state = request.app.state
    base = {"actor": getattr(request.state, "actor", None), "community": state.community_name, "tz": state.tz}
    return templates.TemplateResponse(request, name, base | context, status_code=status)


templates.env.filters["clock"] = clock
templates.env.filters["ago"] = ago
