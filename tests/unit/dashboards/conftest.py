"""Shared by the web tests: an alert service holding one SOS whose first call went out."""
from __future__ import annotations

import pytest

from tests.unit.alert_support import DAY, FakeNotifier, make_service, msg


@pytest.fixture
def svc(tmp_path):
    s = make_service(tmp_path, FakeNotifier())
    s.observe([msg("w1", "sos", 1, DAY, lat=31.2304, lon=121.4737)], DAY)
    s.dispatcher.run_once()
    yield s
    s.close()
