"""Builds what runs beside ingest: the alert service (the ingest observer) and the web server."""
from __future__ import annotations

import logging
import threading
import time

from alerts.service import AlertService, build_alert_service
from dashboards.metrics import ProcessStatus
from eldercare.settings import Settings
from gateway.runner import Gateway

log = logging.getLogger(__name__)


def build_observer(settings: Settings) -> AlertService:
    """The alert engine with its notifier (Twilio when configured, otherwise dry-run); call `start()`."""
    from alerts.notifiers.factory import build_notifier
    from gateway.store import OperationalStore

    def registered() -> list[tuple[str, str]]:
        store = OperationalStore(settings.store.database)
        try:
            return store.registered_devices()
        finally:
            store.close()

    return build_alert_service(settings.alerts, build_notifier(settings.alerts), registered=registered,
                               database_url=settings.store.url)


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
    """Uvicorn in a thread: the operator console, the JSON API and Twilio's webhooks."""

    def __init__(self, settings: Settings, service: AlertService, probe: ProcessProbe | None = None) -> None:
        import uvicorn

        from dashboards.accounts import AccountStore
        from dashboards.app import create_app
        from gateway.store import OperationalStore

        self.accounts = AccountStore(settings.store.url or settings.web.db_path, settings.web.session_hours)
        self.devices = OperationalStore(settings.store.database)
        app = create_app(service, self.accounts, self.devices,
                         twilio_auth_token=settings.alerts.twilio.auth_token.get_secret_value(),
                         public_base_url=settings.alerts.public_base_url, web=settings.web, probe=probe)
        # Open event streams end with the server: a console reconnects to the next one by itself.
        config = uvicorn.Config(app, host=settings.web.host, port=settings.web.port, log_level="warning",
                                lifespan="off", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self.address = f"http://{settings.web.host}:{settings.web.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; raises WebServerError if the address cannot be served (e.g. the port is taken)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise WebServerError(f"web: cannot serve on {self.address} (is the port taken? see [web] port)")
            time.sleep(0.02)
        log.info("web: operator console on %s/console", self.address)
        if not self.accounts.has_admin():
            log.warning("web: no admin account yet; create one with: eldercare-gateway create-admin USERNAME")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.accounts.close()
        self.devices.close()
