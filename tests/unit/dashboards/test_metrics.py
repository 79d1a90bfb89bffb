"""/metrics and /ready: who may read them, what they say, and when an instance is ready."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from dashboards.accounts import Role
from dashboards.app import create_app
from dashboards.config import WebSettings
from dashboards.metrics import ProcessStatus
from gateway.runner import GatewayStatus, LaneStatus
from tests.unit.alert_support import DAY
from tests.unit.dashboards.web_support import BASE, TWILIO_TOKEN


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def lane(connected: bool = True) -> LaneStatus:
    return LaneStatus(connected, 3, 0.25, {"received": 10, "accepted": 7, "duplicates": 1, "ignored": 0},
                      {"bad_json": 2})


def gateway(connected: bool = True, store_ok: bool = True) -> GatewayStatus:
    return GatewayStatus({"critical": lane(connected), "telemetry": lane()}, 7, 0, 0, store_ok)


@pytest.fixture
def stores(web_parts):
    return web_parts[1:]


def client_from(host: str, svc, stores, status: ProcessStatus, **web) -> TestClient:
    accounts, devices = stores
    app = create_app(svc, accounts, devices, twilio_auth_token=TWILIO_TOKEN, public_base_url=BASE,
                     web=WebSettings(**web), probe=lambda: status)
    return TestClient(app, client=(host, 40000), raise_server_exceptions=False)


def test_metrics_answer_a_configured_network_without_a_login_and_say_what_the_process_counted(svc, stores):
    text = client_from("127.0.0.1", svc, stores, ProcessStatus(True, gateway())).get("/metrics").text
    got = samples(text)
    assert got[("eldercare_active", ())] == 1
    assert got[("eldercare_messages_total", (("lane", "telemetry"), ("outcome", "accepted")))] == 7
    assert got[("eldercare_dead_letters_total", (("lane", "critical"), ("reason", "bad_json")))] == 2
    assert got[("eldercare_lane_lag_seconds", (("lane", "critical"),))] == 0.25
    assert got[("eldercare_store_up", ())] == 1
    # From the alert service's store: the fixture's SOS is open and its first call went out.
    assert got[("eldercare_open_alerts", (("severity", "red"),))] == 1
    assert got[("eldercare_open_alerts", (("severity", "yellow"),))] == 0
    assert got[("eldercare_outbox_rows", (("channel", "voice"), ("status", "sent")))] == 1
    assert "eldercare_notification_send_seconds_bucket" in text   # the histograms are exposed too


def test_metrics_from_elsewhere_need_a_login_or_a_token(svc, stores):
    client = client_from("203.0.113.9", svc, stores, ProcessStatus(True, gateway()))
    assert client.get("/metrics").status_code == 401
    token = stores[0].create_token("prometheus", Role.OPERATOR, "test", DAY)
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    wider = client_from("203.0.113.9", svc, stores, ProcessStatus(True, gateway()), metrics_networks=["203.0.113.0/24"])
    assert wider.get("/metrics").status_code == 200


def test_a_network_that_is_not_one_is_refused_in_the_settings():
    with pytest.raises(ValueError, match="not a network"):
        WebSettings(metrics_networks=["prometheus.local"])


@pytest.mark.parametrize("status, code, body", [
    (ProcessStatus(True, gateway()), 200, {"status": "active", "broker": True, "store": True}),
    (ProcessStatus(True, gateway(connected=False)), 503, {"status": "not ready", "broker": False, "store": True}),
    (ProcessStatus(True, gateway(store_ok=False)), 503, {"status": "not ready", "broker": True, "store": False}),
    (ProcessStatus(True, None), 503, {"status": "not ready", "broker": False, "store": False}),
    (ProcessStatus(False, gateway()), 503, {"status": "standby", "broker": True, "store": True}),
])
def test_ready_only_when_active_with_broker_and_store_connected(svc, stores, status, code, body):
    r = client_from("198.51.100.1", svc, stores, status).get("/ready")   # no login: load balancers ask
    assert (r.status_code, r.json()) == (code, body)


REPO = Path(__file__).resolve().parents[3]
MONITORING_FILES = [REPO / "dashboards" / "grafana" / "eldercare-gateway.json",
                    REPO / "examples" / "prometheus" / "eldercare-alerts.yml"]


@pytest.mark.parametrize("path", MONITORING_FILES, ids=lambda p: p.name)
def test_the_grafana_dashboard_and_alert_rules_ask_only_for_metrics_the_gateway_exposes(svc, stores, path):
    exposed = {name for name, _ in samples(client_from("127.0.0.1", svc, stores, ProcessStatus(True, gateway()))
                                           .get("/metrics").text)}
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        text = " ".join(t["expr"] for p in json.loads(text)["panels"] for t in p["targets"])
    asked = set(re.findall(r"\beldercare_[a-z_]+", text))
    assert asked and asked <= exposed, sorted(asked - exposed)


def test_every_alert_rule_says_how_urgent_it_is_and_what_broke():
    import yaml

    rules = [r for g in yaml.safe_load(MONITORING_FILES[1].read_text(encoding="utf-8"))["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    for rule in rules:
        assert rule["alert"].startswith("Eldercare") and rule["expr"].strip()
        assert rule["labels"]["severity"] in ("page", "ticket") and rule["annotations"]["summary"]


def test_a_standby_is_alive_not_ready_and_shows_its_metrics_to_the_configured_networks_only():
    from dashboards.app import create_standby_app

    app = create_standby_app(lambda: ProcessStatus(False, None), WebSettings())
    inside, outside = TestClient(app, client=("127.0.0.1", 4000)), TestClient(app, client=("203.0.113.9", 4000))
    assert inside.get("/health").json() == {"status": "ok"}
    assert (inside.get("/ready").status_code, inside.get("/ready").json()["status"]) == (503, "standby")
    assert samples(inside.get("/metrics").text)[("eldercare_active", ())] == 0
    assert outside.get("/metrics").status_code == 403
    assert inside.get("/console").status_code == 404   # no console: operators work on the active one
