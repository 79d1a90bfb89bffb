"""Builds what runs beside ingest: the alert service (the ingest observer) and the web server."""
from __future__ import annotations

import logging
import threading
import time

from alerts.service import AlertService, build_alert_service
from eldercare.settings import Settings

log = logging.getLogger(__name__)


def build_observer(settings: Settings) -> AlertService:
    """The alert engine with its notifier (Twilio when configured, otherwise dry-run); call `start()`."""
    from alerts.notifiers.factory import build_notifier
    from gateway.store import OperationalStore

    def registered() -> list[tuple[str, str]]:
        store = OperationalStore(settings.store.path)
        try:
            return store.registered_devices()
        finally:
            store.close()

    return build_alert_service(settings.alerts, build_notifier(settings.alerts), registered=registered)


class WebServerError(RuntimeError):
    """The web server could not start."""


class WebServer:
    """Uvicorn in a thread: Twilio's webhooks and the operator API."""

    def __init__(self, settings: Settings, service: AlertService) -> None:
        import uvicorn

        from dashboards.app import create_app

        app = create_app(service, twilio_auth_token=settings.alerts.twilio.auth_token.get_secret_value(),
                         public_base_url=settings.alerts.public_base_url,
                         api_token=settings.web.api_token.get_secret_value() or None)
        config = uvicorn.Config(app, host=settings.web.host, port=settings.web.port, log_level="warning",
                                lifespan="off", access_log=False)
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
        log.info("web: webhooks and operator API on %s", self.address)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
