"""Operator REST API: list alerts, acknowledge and resolve them; behind a bearer token."""
from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from alerts.lifecycle import TransitionError
from alerts.service import AlertService
from alerts.vocabulary import AlertState
from dashboards.params import RowId


class ActorBody(BaseModel):
    actor: str = Field(min_length=1, max_length=200, description="Who acts: operator name or phone")


def operator_router(service: AlertService, api_token: str | None) -> APIRouter:
    def bearer(request: Request) -> None:
        # No token configured means the API is closed, not open.
        given = request.headers.get("Authorization", "")
        if not api_token or not hmac.compare_digest(given.encode(), f"Bearer {api_token}".encode()):
            raise HTTPException(status_code=401, detail="bearer token required", headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=[Depends(bearer)])

    @router.get("")
    async def list_alerts(state: AlertState | None = None) -> list[dict[str, Any]]:
        return [asdict(a) for a in await run_in_threadpool(service.alerts, state)]

    @router.get("/{alert_id}/events")
    async def alert_events(alert_id: RowId) -> list[dict[str, Any]]:
        return [asdict(e) for e in await run_in_threadpool(service.events, alert_id)]

    async def _change(fn: Callable[[int, str], Any], alert_id: int, body: ActorBody) -> dict[str, Any]:
        try:
            return asdict(await run_in_threadpool(fn, alert_id, body.actor))
        except KeyError:
            raise HTTPException(status_code=404, detail="no such alert") from None
        except TransitionError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    @router.post("/{alert_id}/ack")
    async def acknowledge(alert_id: RowId, body: ActorBody) -> dict[str, Any]:
        return await _change(service.acknowledge, alert_id, body)

    @router.post("/{alert_id}/resolve")
    async def resolve(alert_id: RowId, body: ActorBody) -> dict[str, Any]:
        return await _change(service.resolve, alert_id, body)

    return router
