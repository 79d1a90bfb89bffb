"""Shared by the web tests: an alert service holding one SOS whose first call went out."""
from __future__ import annotations

import pytest

from tests.unit.alert_support import DAY, FakeNotifier, make_service, msg
from tests.unit.dashboards.web_support import make_web


@pytest.fixture
def svc(tmp_path):
    s = make_service(tmp_path, FakeNotifier())
    s.observe([msg("w1", "sos", 1, DAY, lat=31.2304, lon=121.4737)], DAY)
    s.dispatcher.run_once()
    yield s
    s.close()


@pytest.fixture
def web_parts(svc, tmp_path):
    """A test client of the web app on `svc`, with its account store and device store (closed afterwards)."""
    client, accounts, devices = make_web(svc, tmp_path)
    yield client, accounts, devices
    accounts.close()
    devices.close()
