"""The JSON API for integrators (named API tokens) and scripts: alerts and the actions on them.

The acting person is always the caller's account or token, never a field of the request.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from alerts.lifecycle import TransitionError
from alerts.service import AlertService
from alerts.vocabulary import AlertState
from dashboards.auth import Operator, operator
from dashboards.params import RowId


class ResolveBody(BaseModel):
    note: str = Field(min_length=1, max_length=2000, description="What was done: needed to close an alert")

def operator_router(service: AlertService) -> APIRouter:
    router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=[Depends(operator)])

    @router.get("")
    async def list_alerts(state: AlertState | None = None) -> list[dict[str, Any]]:
        return [asdict(a) for a in await run_in_threadpool(service.alerts, state)]

    @router.get("/{alert_id}/events")
    async def alert_events(alert_id: RowId) -> list[dict[str, Any]]:
        return [asdict(e) for e in await run_in_threadpool(service.events, alert_id)]

    async def _change(fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            return asdict(await run_in_threadpool(fn))
        except KeyError:
            raise HTTPException(status_code=404, detail="no such alert") from None
        except TransitionError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    @router.post("/{alert_id}/take")
    async def take(alert_id: RowId, actor: Operator) -> dict[str, Any]:
        return await _change(lambda: service.take(alert_id, actor.name))

    @router.post("/{alert_id}/ack")
    async def acknowledge(alert_id: RowId, actor: Operator) -> dict[str, Any]:
        return await _change(lambda: service.acknowledge(alert_id, actor.name))

    @router.post("/{alert_id}/resolve")
    async def resolve(alert_id: RowId, body: ResolveBody, actor: Operator) -> dict[str, Any]:
        return await _change(lambda: service.resolve(alert_id, actor.name, note=body.note))

    return router
