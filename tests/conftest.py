"""Shared fixtures: real services on free loopback ports, and a real browser (see tests/fixtures/)."""
from tests.fixtures.browser import chromium  # noqa: F401
from tests.fixtures.gateway_proc import gateway_in_process, gateway_process  # noqa: F401
from tests.fixtures.postgres import postgres_server, postgres_url, store_backend  # noqa: F401
from tests.fixtures.services import mosquitto, production_mosquitto, victoria  # noqa: F401
from tests.fixtures.tls import pki, tls_mosquitto  # noqa: F401
from tests.fixtures.twilio_standin import twilio_standin, twilio_standin_session  # noqa: F401
