"""The operator console's pages: the live alert queue, an alert's detail, and the actions on an alert.

Routes stay thin: read through the services, assemble with `views`, render a template. The
live parts are fragments the page fetches again whenever the event stream says something changed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from alerts.lifecycle import Alert, TransitionError
from alerts.maps import Datum
from alerts.service import AlertService
from alerts.vocabulary import AlertState
from dashboards import views
from dashboards.auth import Operator
from dashboards.live import Broadcaster
from dashboards.mapsvg import Marker, render_map
from dashboards.pages import clock, render
from dashboards.params import MapZoom, RowId
from gateway.store import OperationalStore

TRACK_BEFORE_MS = 2 * 3_600_000   # the detail map shows the two hours before the alert, and everything since


def _now_ms() -> int:
    return int(time.time() * 1000)


Spot = tuple[float | None, float | None, str, str]   # lat, lon, label, marker kind


def _markers(spots: list[Spot]) -> list[Marker]:
    """One marker per place, the first spot's: where the alert began, later presses, the last known position."""
    out: list[Marker] = []
    taken: set[tuple[float, float]] = set()
    for lat, lon, label, kind in spots:
        if lat is None or lon is None or (round(lat, 5), round(lon, 5)) in taken:
            continue
        taken.add((round(lat, 5), round(lon, 5)))
        out.append(Marker(lat, lon, label, kind))
    return out


def console_router(service: AlertService, devices: OperationalStore, broadcaster: Broadcaster, *,
                   tile_url: str = "", tile_datum: Datum = "wgs84", queue_page_size: int = 200) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    settings = service.settings

    def queue_items() -> list[views.QueueItem]:
        return views.queue(service.unresolved(), service.needing_operator(), service.directory, settings.ack_deadline_s)

    def queue_item(alert: Alert) -> views.QueueItem | None:
        """The alert as the queue shows it; None once resolved (it has left the queue)."""
        if alert.state == AlertState.RESOLVED:
            return None
        return views.queue_item(alert, service.needing_operator(), service.directory, settings.ack_deadline_s)

    @router.get("/")
    async def home(actor: Operator) -> Response:
        return RedirectResponse("/console", status_code=303)

    async def queue_page(request: Request, template: str, show_all: bool) -> Response:
        items = await run_in_threadpool(queue_items)
        page = views.page(items, None if show_all else queue_page_size)
        return render(request, template, {"page": page, "show_all": show_all, "now_ms": _now_ms()})

    @router.get("/console")
    async def console(request: Request, actor: Operator, all: bool = False) -> Response:
        return await queue_page(request, "queue.html", all)

    @router.get("/console/queue")
    async def queue_fragment(request: Request, actor: Operator, all: bool = False) -> Response:
        return await queue_page(request, "_queue.html", all)

    @router.get("/console/queue/{alert_id}")
    async def queue_card(request: Request, alert_id: RowId, actor: Operator) -> Response:
        """One alert's card as the queue shows it; 204 when it is not in the queue (resolved, or no such alert)."""
        def item() -> views.QueueItem | None:
            alert = service.alert(alert_id)
            return queue_item(alert) if alert else None
        found = await run_in_threadpool(item)
        if found is None:
            return Response(status_code=204)
        return render(request, "_queue_card.html", {"i": found, "now_ms": _now_ms()})

    @router.get("/console/events")
    async def events(actor: Operator) -> StreamingResponse:
        return StreamingResponse(broadcaster.stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def detail(alert_id: int, zoom: int) -> dict[str, object]:
        alert = service.alert(alert_id)
        if alert is None:
            raise HTTPException(status_code=404, detail="no such alert")
        events = service.events(alert_id)
        resident = service.directory.resident(alert.resident_id)
        now = _now_ms()
        state = devices.last_state(alert.device_id)
        since = alert.opened_ms - TRACK_BEFORE_MS
        track = devices.track(alert.device_id, since)
        presses = views.presses(alert, events)
        tz = settings.timezone
        kinds = ["alert"] + ["press"] * (len(presses) - 1)
        spots: list[Spot] = [(p.lat, p.lon, f"{kind} {clock(p.at_ms, tz)}", kind) for p, kind in zip(presses, kinds, strict=True)]
        if state:
            spots.append((state.get("lat"), state.get("lon"), f"last {clock(state.get('position_ts'), tz)}", "now"))
        markers = _markers(spots)
        svg = render_map(track=track, markers=markers, fence=resident.geofence if resident else None,
                         highlight_since_ms=alert.opened_ms, tile_url=tile_url or None, tile_datum=tile_datum,
                         title=f"Track of {resident.name if resident else alert.device_id}",
                         zoom_delta=zoom, focus=(markers[-1].lat, markers[-1].lon) if markers else None)
        return {"alert": alert, "what": views.type_label(alert.alert_type), "resident": resident,
                "device": views.device_summary(state, now, int(settings.watch_silent_min_s * 1000)),
                "presses": presses, "attempts": views.attempts(service.attempts(alert_id), alert), "events": events,
                "map_svg": svg, "track_points": len(track), "now_ms": now, "zoom": zoom,
                "zoom_links": views.zoom_links(f"/alerts/{alert_id}", {}, zoom),
                "item": queue_item(alert)}

    @router.get("/alerts/{alert_id}")
    async def alert_page(request: Request, alert_id: RowId, actor: Operator, zoom: MapZoom = 0) -> Response:
        return render(request, "alert.html", await run_in_threadpool(detail, alert_id, zoom))

    @router.get("/alerts/{alert_id}/live")
    async def alert_fragment(request: Request, alert_id: RowId, actor: Operator, zoom: MapZoom = 0) -> Response:
        return render(request, "_alert_live.html", await run_in_threadpool(detail, alert_id, zoom))

    async def act(request: Request, alert_id: int, change: Callable[[], object]) -> Response:
        try:
            await run_in_threadpool(change)
        except KeyError:
            raise HTTPException(status_code=404, detail="no such alert") from None
        except TransitionError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None
        if request.headers.get("X-CSRF-Token"):   # the page's script: it refreshes itself
            return Response(status_code=204)
        back = request.headers.get("referer") or f"/alerts/{alert_id}"
        return RedirectResponse(back if back.startswith(str(request.base_url)) else f"/alerts/{alert_id}", status_code=303)

    @router.post("/alerts/{alert_id}/take")
    async def take(request: Request, alert_id: RowId, actor: Operator) -> Response:
        return await act(request, alert_id, lambda: service.take(alert_id, actor.name))

    @router.post("/alerts/{alert_id}/ack")
    async def acknowledge(request: Request, alert_id: RowId, actor: Operator) -> Response:
        return await act(request, alert_id, lambda: service.acknowledge(alert_id, actor.name))

    @router.post("/attempts/{attempt_id}/settle")
    async def settle(request: Request, attempt_id: RowId, actor: Operator,
                     outcome: Annotated[Literal["arrived", "resend"], Form()]) -> Response:
        """A notification whose outcome nobody could tell: the operator checked that it arrived, or sends it again."""
        row = service.attempt(attempt_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such notification attempt")
        return await act(request, row.alert_id, lambda: service.settle_attempt(attempt_id, outcome == "arrived", actor.name))

    @router.post("/alerts/{alert_id}/resolve")
    async def resolve(request: Request, alert_id: RowId, actor: Operator,
                      note: Annotated[str, Form(min_length=1, max_length=2000)]) -> Response:
        return await act(request, alert_id, lambda: service.resolve(alert_id, actor.name, note=note.strip() or note))

    return router
