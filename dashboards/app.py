"""The dashboard web app: for now the Twilio webhooks and the operator alert API."""
from __future__ import annotations

from fastapi import FastAPI

from alerts.service import AlertService
from dashboards.api import operator_router
from dashboards.webhooks import twilio_router


def create_app(service: AlertService, *, twilio_auth_token: str, public_base_url: str,
               api_token: str | None = None) -> FastAPI:
    app = FastAPI(title="Eldercare gateway")
    app.include_router(twilio_router(service, twilio_auth_token, public_base_url))
    app.include_router(operator_router(service, api_token))
    return app
