"""The web app: operator console, admin pages, JSON API and Twilio's webhooks, in one FastAPI app."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from alerts.service import AlertService
from dashboards.accounts import AccountStore
from dashboards.admin import admin_router
from dashboards.api import operator_router
from dashboards.auth import NotLoggedIn, Operator, login_redirect, login_router
from dashboards.config import WebSettings
from dashboards.console import console_router
from dashboards.exercise import exercise_router
from dashboards.fleet import fleet_router
from dashboards.live import Broadcaster
from dashboards.metrics import Probe, ProcessStatus, monitoring_router
from dashboards.pages import HERE, render
from dashboards.record_links import RecordLinks
from dashboards.usage import usage_router
from dashboards.webhooks import twilio_router
from gateway.store import OperationalStore


def create_standby_app(probe: Probe, web: WebSettings) -> FastAPI:
    """A standby's web face: alive, not ready, and its metrics (to the configured networks only: a standby
    holds no accounts to log in with)."""
    app = FastAPI(title="Eldercare gateway (standby)", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(monitoring_router(probe, None, web.metrics_networks))
    return app


def create_app(service: AlertService, accounts: AccountStore, devices: OperationalStore, *, twilio_auth_token: str,
               public_base_url: str, web: WebSettings | None = None, probe: Probe | None = None,
               links: RecordLinks | None = None) -> FastAPI:
    """`probe` tells monitoring how the process is doing; without one this is an active instance with no ingest.
    `links` (residents' record links) defaults to a store beside the operator accounts."""
    web = web or WebSettings()
    links = links or RecordLinks(accounts.target)
    app = FastAPI(title="Eldercare gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.accounts = accounts
    app.state.community_name = service.directory.community.name
    app.state.tz = service.settings.timezone
    broadcaster = Broadcaster()
    app.state.broadcaster = broadcaster
    service.listeners.append(broadcaster.publish)

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        if request.method == "GET" and "text/html" in request.headers.get("accept", "") \
                and not request.url.path.startswith("/api/"):
            return login_redirect(request)
        return JSONResponse({"detail": "log in or send an API token"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(actor: Operator) -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request, actor: Operator) -> Response:
        """The API's routes, rendered here (no CDN-hosted Swagger UI: the console works offline)."""
        return render(request, "docs.html", {"spec": app.openapi()})

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(login_router(web.cookie_secure))
    app.include_router(console_router(service, devices, broadcaster, tile_url=web.tile_url, tile_datum=web.tile_datum,
                                      queue_page_size=web.queue_page_size))
    app.include_router(fleet_router(service, devices, tile_url=web.tile_url, tile_datum=web.tile_datum))
    app.include_router(admin_router(accounts))
    app.include_router(usage_router(service, devices))
    app.include_router(monitoring_router(probe or (lambda: ProcessStatus(True, None)), service, web.metrics_networks))
    app.include_router(operator_router(service))
    app.include_router(twilio_router(service, twilio_auth_token, public_base_url))
    app.include_router(exercise_router(service, devices, links, public_base_url=public_base_url,
                                       phone_prefix=web.phone_prefix, cookie_secure=web.cookie_secure))
    return app

