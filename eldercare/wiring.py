"""Builds what runs beside ingest: the alert service (the ingest observer) and the web server."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from alerts.directory import Directory
from alerts.service import AlertService, build_alert_service
from dashboards.metrics import ProcessStatus
from eldercare.settings import Settings
from gateway.priority import Priority
from gateway.runner import Gateway

log = logging.getLogger(__name__)


def build_observer(settings: Settings, directory: Directory | None = None, priority: Priority | None = None) -> AlertService:
    """The alert engine with its notifier (Twilio when configured, otherwise dry-run); call `start()`.
    `directory`: the community file already loaded (a standby loads it while it waits)."""
    from alerts.notifiers.factory import build_notifier

    return build_alert_service(settings.alerts, build_notifier(settings.alerts), database_url=settings.store.url,
                               directory=directory, priority=priority)


class ProcessProbe:
    """What /metrics and /ready say about this process; ingest joins once it is built."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.active = True

    def __call__(self) -> ProcessStatus:
        return ProcessStatus(self.active, self.gateway.status() if self.gateway else None)


class WebServerError(RuntimeError):
    """The web server could not start."""


class WebServer:
    """Uvicorn in a thread serving `app` on [web] host and port; `closing` is closed after it stops."""

    def __init__(self, settings: Settings, app: Any, what: str, closing: Sequence[Any] = ()) -> None:
        import uvicorn

        # Open event streams end with the server: a console reconnects to the next one by itself.
        config = uvicorn.Config(app, host=settings.web.host, port=settings.web.port, log_level="warning",
                                lifespan="off", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self.address = f"http://{settings.web.host}:{settings.web.port}"
        self.what = what
        self.closing = closing

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; raises WebServerError if the address cannot be served (e.g. the port is taken)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise WebServerError(f"web: cannot serve on {self.address} (is the port taken? see [web] port)")
            time.sleep(0.02)
        log.info("web: %s on %s", self.what, self.address)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        for part in self.closing:
            part.close()


def console_server(settings: Settings, service: AlertService, probe: ProcessProbe | None = None) -> WebServer:
    """The operator console, the JSON API, Twilio's webhooks and monitoring."""
    from dashboards.accounts import AccountStore
    from dashboards.app import create_app
    from dashboards.record_links import RecordLinks
    from gateway.store import OperationalStore

    accounts = AccountStore(settings.accounts_database, settings.web.session_hours)
    links = RecordLinks(settings.accounts_database)
    devices = OperationalStore(settings.store.database, settings.exercise.claim_ttl_s)
    app = create_app(service, accounts, devices,
                     twilio_auth_token=settings.alerts.twilio.auth_token.get_secret_value(),
                     public_base_url=settings.alerts.public_base_url, web=settings.web, probe=probe, links=links)
    if not accounts.has_admin():
        log.warning("web: no admin account yet; create one with: eldercare-gateway create-admin USERNAME")
    return WebServer(settings, app, f"operator console at {settings.web.host}:{settings.web.port}/console",
                     (accounts, links, devices))


def standby_server(settings: Settings, probe: ProcessProbe) -> WebServer:
    """What a standby serves on the console's address: /health, /ready (503, standby) and /metrics. It opens
    nothing in the store, so it serves while the store is away too."""
    from dashboards.app import create_standby_app

    return WebServer(settings, create_standby_app(probe, settings.web), "standby (/health, /ready, /metrics)")
