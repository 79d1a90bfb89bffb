"""Shared fixtures: real services on free loopback ports (see tests/fixtures/)."""
from tests.fixtures.services import mosquitto, victoria  # noqa: F401
