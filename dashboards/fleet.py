"""The fleet: every device with its state, and any device's track for a chosen window (page and GeoJSON)."""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from alerts.maps import Datum
from alerts.service import AlertService
from dashboards import views
from dashboards.auth import Operator
from dashboards.mapsvg import Marker, render_map
from dashboards.pages import clock, render
from dashboards.params import MapZoom
from gateway.store import OperationalStore

PAGE_ROWS = 200
Text = Annotated[str, Query(max_length=100)]
DeviceId = Annotated[str, Path(min_length=1, max_length=64)]


def _now_ms() -> int:
    return int(time.time() * 1000)


def fleet_router(service: AlertService, devices: OperationalStore, *, tile_url: str = "",
                 tile_datum: Datum = "wgs84") -> APIRouter:
    router = APIRouter()
    settings = service.settings
    silent_ms = int(settings.watch_silent_min_s * 1000)

    def window(since: str | None, until: str | None) -> tuple[int, int]:
        try:
            return views.track_window(since, until, _now_ms(), settings.timezone)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None

    def known(device_id: str) -> None:
        if devices.device(device_id) is None:
            raise HTTPException(status_code=404, detail="no such device")

    @router.get("/fleet", include_in_schema=False)
    async def fleet_page(request: Request, actor: Operator, q: Text = "", show: Text = "all") -> Response:
        rows = await run_in_threadpool(devices.fleet)
        shown = views.fleet(rows, service.directory, _now_ms(), silent_ms, query=q, show=show)
        return render(request, "fleet.html", {"rows": shown[:PAGE_ROWS], "matched": len(shown), "total": len(rows),
                                              "q": q, "show": show, "filters": views.FLEET_FILTERS, "now_ms": _now_ms(),
                                              "page_rows": PAGE_ROWS})

    @router.get("/devices/{device_id}", include_in_schema=False)
    async def device_page(request: Request, device_id: DeviceId, actor: Operator,
                          since: Text = "", until: Text = "", zoom: MapZoom = 0) -> Response:
        known(device_id)
        since_ms, until_ms = window(since or None, until or None)
        track = await run_in_threadpool(devices.track, device_id, since_ms, until_ms)
        resident = service.directory.wearer(device_id)
        tz = settings.timezone
        markers = [Marker(track[0][1], track[0][2], f"start {clock(track[0][0], tz)}", "start"),
                   Marker(track[-1][1], track[-1][2], f"last {clock(track[-1][0], tz)}", "now")] if track else []
        svg = render_map(track=track, markers=markers, fence=resident.geofence if resident else None,
                         tile_url=tile_url or None, tile_datum=tile_datum, title=f"Track of {device_id}",
                         zoom_delta=zoom, focus=(markers[-1].lat, markers[-1].lon) if markers else None)
        state = views.device_summary(devices.last_state(device_id), _now_ms(), silent_ms)
        return render(request, "device.html", {"device_id": device_id, "resident": resident, "device": state,
                                               "map_svg": svg, "track": track, "since_ms": since_ms, "until_ms": until_ms,
                                               "since": since, "until": until, "now_ms": _now_ms(),
                                               "zoom_links": views.zoom_links(f"/devices/{device_id}",
                                                                              {"since": since, "until": until}, zoom)})

    @router.get("/api/devices/{device_id}/track", tags=["devices"])
    async def track_geojson(device_id: DeviceId, actor: Operator,
                            since: Text = "", until: Text = "") -> dict[str, Any]:
        """The device's positions in the window as GeoJSON (WGS-84, [lon, lat]); `since`/`until` are "09:00" (today, in
        the community's zone) or "2026-11-27T09:00"; default: the last two hours."""
        known(device_id)
        since_ms, until_ms = window(since or None, until or None)
        track = await run_in_threadpool(devices.track, device_id, since_ms, until_ms)
        return {"type": "FeatureCollection", "features": [{
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[lon, lat] for _, lat, lon in track]},
            "properties": {"device_id": device_id, "since_ms": since_ms, "until_ms": until_ms,
                           "times_ms": [ts for ts, _, _ in track]},
        }]}

    return router
