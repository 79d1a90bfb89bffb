"""Monitoring: `/metrics` in Prometheus' text format, `/health`, and `/ready` for whoever decides where traffic goes.

Counters and gauges are read from the running parts when Prometheus scrapes (nothing is counted
twice, and the hot path pays nothing for them); the few histograms are observed where the work
happens, once per batch or per send (`gateway/ingest.py`, `alerts/dispatch.py`).

`/metrics` answers without a login to the networks in `[web] metrics_networks` (loopback by
default); anyone else needs a login or an API token, like every other route.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from alerts.service import AlertService
from alerts.vocabulary import Severity
from dashboards.auth import operator
from gateway.runner import GatewayStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    active: bool                   # this instance is the one consuming and notifying (False: standby)
    gateway: GatewayStatus | None  # None until ingest has started


Probe = Callable[[], ProcessStatus]


class GatewayCollector(Collector):
    """Everything monitoring needs from one gateway process, read at scrape time."""

    def __init__(self, probe: Probe, service: AlertService | None) -> None:
        self.probe = probe
        self.service = service

    def collect(self) -> Iterator[Metric]:
        status = self.probe()
        yield GaugeMetricFamily("eldercare_active", "1 when this instance is the active gateway, 0 when standby",
                                value=int(status.active))
        if status.gateway is not None:
            yield from _ingest_metrics(status.gateway)
        if self.service is not None:
            yield from _alert_metrics(self.service)


def _alert_metrics(service: AlertService) -> Iterator[Metric]:
    open_alerts = GaugeMetricFamily("eldercare_open_alerts", "Alerts not yet resolved, by grade", labels=["severity"])
    counts = service.open_by_severity()
    for severity in Severity:
        open_alerts.add_metric([severity.value], counts.get(severity.value, 0))
    yield open_alerts
    outbox = GaugeMetricFamily("eldercare_outbox_rows", "Notification attempts by status and channel",
                               labels=["status", "channel"])
    for (state, channel), n in sorted(service.outbox_counts().items()):
        outbox.add_metric([state, channel], n)
    yield outbox


def _ingest_metrics(g: GatewayStatus) -> Iterator[Metric]:
    messages = CounterMetricFamily("eldercare_messages", "Device messages by lane and what became of them "
                                   "(received = accepted + duplicates + ignored + dead-lettered)", labels=["lane", "outcome"])
    dead = CounterMetricFamily("eldercare_dead_letters", "Messages kept aside with the reason they were refused",
                               labels=["lane", "reason"])
    connected = GaugeMetricFamily("eldercare_broker_connected", "1 when the lane's MQTT session is connected",
                                  labels=["lane"])
    inbox = GaugeMetricFamily("eldercare_lane_inbox_messages", "Messages received and not yet taken into a batch",
                              labels=["lane"])
    lag = GaugeMetricFamily("eldercare_lane_lag_seconds",
                            "The last batch's time from arrival to acknowledgement to the broker", labels=["lane"])
    for lane, s in g.lanes.items():
        for outcome, n in s.counts.items():
            messages.add_metric([lane, outcome], n)
        for reason, n in sorted(s.dead_letters.items()):
            dead.add_metric([lane, reason], n)
        connected.add_metric([lane], int(s.connected))
        inbox.add_metric([lane], s.inbox)
        lag.add_metric([lane], s.lag_s)
    yield from (messages, dead, connected, inbox, lag)
    yield CounterMetricFamily("eldercare_sink_lines_written", "Points the time-series store took", value=g.sink_written)
    yield CounterMetricFamily("eldercare_sink_lines_spooled", "Points written to the disk spool while the store was away",
                              value=g.sink_spooled)
    yield GaugeMetricFamily("eldercare_spool_segments", "Spool files waiting to be replayed into the time-series store",
                            value=g.spool_segments)
    yield GaugeMetricFamily("eldercare_store_up", "1 when the operational store answers", value=int(g.store_ok))


def parse_networks(networks: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def _inside(host: str | None, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return any(address in n for n in networks)


def monitoring_router(probe: Probe, service: AlertService | None, networks: Sequence[str]) -> APIRouter:
    """`service` None: a standby, which has no alert service and no accounts (only the networks may scrape)."""
    router = APIRouter(include_in_schema=False)
    allowed = parse_networks(networks)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(probe, service))

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not _inside(request.client.host if request.client else None, allowed):
            if service is None:
                return JSONResponse({"detail": "a standby's metrics are for [web] metrics_networks only"}, status_code=403)
            await operator(request)   # raises NotLoggedIn for a caller without a login or token
        text = await run_in_threadpool(lambda: generate_latest(registry) + generate_latest(REGISTRY))
        return Response(text, media_type=CONTENT_TYPE)

    @router.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (whatever its role)."""
        return {"status": "ok"}

    @router.get("/ready")
    async def ready() -> Response:
        """200 when this instance is active with its broker and store connected; 503 (and why) otherwise."""
        status = await run_in_threadpool(probe)
        g = status.gateway
        body = {"status": "active" if status.active else "standby",
                "broker": bool(g and g.broker_connected), "store": bool(g and g.store_ok)}
        ok = status.active and body["broker"] and body["store"]
        if status.active and not ok:
            body["status"] = "not ready"
        return JSONResponse(body, status_code=200 if ok else 503)

    return router
