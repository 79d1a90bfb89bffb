"""The console's HTTP surface: logins, sessions, CSRF, roles, validation, throttling, and who acts."""
from __future__ import annotations

import time

import pytest

from dashboards.accounts import THROTTLE_AFTER, Role
from dashboards.config import WebSettings
from gateway.models import DeviceKind
from tests.fixtures.gateway_proc import location
from tests.unit.alert_support import DAY, msg
from tests.unit.dashboards.web_support import PASSWORD, logged_in, login, make_web


@pytest.fixture
def web(web_parts):
    return web_parts[:2]


def alert_id(svc) -> int:
    return svc.alerts()[0].id


PAGES = ["/", "/console", "/console/queue", "/alerts/1", "/alerts/1/live", "/admin", "/docs", "/openapi.json"]
API = [("GET", "/api/alerts"), ("GET", "/api/alerts/1/events"), ("POST", "/api/alerts/1/ack"),
       ("POST", "/api/alerts/1/take"), ("POST", "/api/alerts/1/resolve"), ("GET", "/console/events")]
ACTIONS = ["/alerts/1/take", "/alerts/1/ack", "/alerts/1/resolve", "/admin/accounts", "/admin/tokens", "/logout"]


@pytest.mark.parametrize("path", PAGES)
def test_a_page_without_a_session_sends_a_browser_to_the_login_page(web, path):
    client, _ = web
    r = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("method, path", API + [("POST", p) for p in ACTIONS] + [("GET", p) for p in PAGES])
def test_every_protected_route_refuses_a_caller_without_a_session_or_token(web, method, path):
    client, _ = web
    r = client.request(method, path, headers={"Accept": "application/json"}, follow_redirects=False)
    assert r.status_code == 401


@pytest.mark.parametrize("path", ["/login", "/health", "/static/console.css"])
def test_the_login_page_health_and_assets_need_no_login(web, path):
    client, _ = web
    assert client.get(path).status_code == 200


def test_an_operator_logs_in_with_an_httponly_samesite_cookie_and_sees_the_queue(web, svc):
    client, _ = web
    r = login(client, "chen")
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = r.headers["set-cookie"]
    assert "eldercare_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/console")
    assert "SOS pressed — Wang Guilan" in page.text and "chen" in page.text


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(web):
    client, _ = web
    for user in ("chen", "nobody"):
        r = login(client, user, "wrong password!")
        assert r.status_code == 401 and "Wrong username or password." in r.text
    assert client.get("/console", headers={"Accept": "application/json"}).status_code == 401


def test_a_login_form_without_its_csrf_cookie_is_refused(web):
    client, _ = web
    r = client.post("/login", data={"username": "chen", "password": PASSWORD, "csrf": "forged"}, follow_redirects=False)
    assert r.status_code == 403 and "eldercare_session" not in r.headers.get("set-cookie", "")


def test_after_ten_failed_logins_the_account_is_throttled_even_for_the_right_password(web):
    client, _ = web
    for _ in range(THROTTLE_AFTER):
        assert login(client, "chen", "wrong password!").status_code == 401
    r = login(client, "chen")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "Too many failed logins" in r.text
    assert login(client, "admin").status_code == 303   # another account is not affected


@pytest.mark.parametrize("path, form", [("/alerts/1/ack", {}), ("/alerts/1/take", {}),
                                        ("/alerts/1/resolve", {"note": "visited, all well"})])
def test_a_state_change_by_session_without_the_csrf_token_is_refused_and_changes_nothing(web, svc, path, form):
    client, _ = web
    logged_in(client, "chen")
    r = client.post(path, data=form | {"csrf": "not-the-token"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    assert client.post(path, data=form, follow_redirects=False).status_code == 403
    alert = svc.alert(alert_id(svc))
    assert alert.state == "open" and alert.taken_by is None


def test_the_actor_of_every_transition_is_the_logged_in_account_not_a_field(web, svc):
    client, _ = web
    csrf = logged_in(client, "chen")
    aid = alert_id(svc)
    assert client.post(f"/alerts/{aid}/take", data={"actor": "mallory"}, headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.post(f"/alerts/{aid}/ack", data={"actor": "mallory"}, headers={"X-CSRF-Token": csrf}).status_code == 204
    r = client.post(f"/alerts/{aid}/resolve", data={"note": "Called her; she is fine", "actor": "mallory"},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    events = {e.kind: e for e in svc.events(aid)}
    assert events["taken"].actor == events["acknowledged"].actor == events["resolved"].actor == "chen"
    assert events["resolved"].detail == "Called her; she is fine"
    assert svc.alert(aid).acknowledged_by == "chen"


def test_a_plain_form_post_with_the_csrf_field_works_without_javascript(web, svc):
    client, _ = web
    csrf = logged_in(client, "chen")
    r = client.post(f"/alerts/{alert_id(svc)}/ack", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert svc.alert(alert_id(svc)).state == "acknowledged"


def test_resolving_without_a_note_is_a_422_naming_the_note(web, svc):
    client, _ = web
    csrf = logged_in(client, "chen")
    r = client.post(f"/alerts/{alert_id(svc)}/resolve", data={"note": ""}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422
    assert any(err["loc"][-1] == "note" for err in r.json()["detail"])
    assert svc.alert(alert_id(svc)).state == "open"


def test_acting_twice_is_a_409_and_an_unknown_alert_a_404(web, svc):
    client, _ = web
    csrf = logged_in(client, "chen")
    h = {"X-CSRF-Token": csrf}
    assert client.post(f"/alerts/{alert_id(svc)}/ack", headers=h).status_code == 204
    assert client.post(f"/alerts/{alert_id(svc)}/ack", headers=h).status_code == 409
    assert client.post("/alerts/999/ack", headers=h).status_code == 404


def test_an_operator_cannot_reach_the_admin_pages_and_an_admin_can(web):
    client, _ = web
    csrf = logged_in(client, "chen")
    assert client.get("/admin").status_code == 403
    r = client.post("/admin/accounts", data={"username": "eve", "password": PASSWORD, "role": "admin", "csrf": csrf})
    assert r.status_code == 403
    client.cookies.clear()
    csrf = logged_in(client, "admin")
    assert client.get("/admin").status_code == 200
    r = client.post("/admin/accounts", data={"username": "lin", "password": PASSWORD, "role": "operator", "csrf": csrf},
                    follow_redirects=False)
    assert r.status_code == 303
    client.cookies.clear()
    assert login(client, "lin").status_code == 303


def test_a_named_api_token_acts_under_its_own_name_and_stops_working_once_revoked(web, svc):
    client, accounts = web
    token = accounts.create_token("district-hub", Role.OPERATOR, "admin", DAY)
    auth = {"Authorization": f"Bearer {token}"}
    [a] = client.get("/api/alerts?state=open", headers=auth).json()
    assert client.post(f"/api/alerts/{a['id']}/ack", headers=auth).json()["acknowledged_by"] == "token:district-hub"
    r = client.post(f"/api/alerts/{a['id']}/resolve", json={}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "note"]
    accounts.revoke_token("district-hub", DAY + 1)
    assert client.get("/api/alerts", headers=auth).status_code == 401


def test_an_admin_creates_a_token_on_the_admin_page_and_it_is_shown_once(web, svc):
    client, _ = web
    csrf = logged_in(client, "admin")
    r = client.post("/admin/tokens", data={"name": "erp", "role": "operator", "csrf": csrf})
    token = r.text.split('id="new-token">')[1].split("<")[0]
    assert client.get("/api/alerts", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert token not in client.get("/admin").text


def test_logging_out_ends_the_session(web):
    client, _ = web
    csrf = logged_in(client, "chen")
    cookie = client.cookies.get("eldercare_session")
    assert client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set("eldercare_session", cookie)
    assert client.get("/console", headers={"Accept": "application/json"}).status_code == 401


def test_the_detail_page_shows_the_resident_the_map_and_the_attempts(web, svc):
    client, _ = web
    logged_in(client, "chen")
    page = client.get(f"/alerts/{alert_id(svc)}").text
    assert "Wang Guilan" in page and "<svg" in page and "+15555550100" in page
    assert "Wang Li" in page   # a contact


def test_a_next_target_off_the_site_is_ignored(web):
    client, _ = web
    from tests.unit.dashboards.web_support import login_form_csrf
    r = client.post("/login", data={"username": "chen", "password": PASSWORD, "csrf": login_form_csrf(client),
                                    "next": "//evil.example/phish"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


# -- fleet -----------------------------------------------------------------------------------------

@pytest.fixture
def fleet_web(svc, tmp_path):
    client, accounts, devices = make_web(svc, tmp_path)
    now = int(time.time() * 1000)
    for device_id, kind in (("w1", DeviceKind.WATCH), ("w-quiet", DeviceKind.WATCH), ("rower-1", DeviceKind.EQUIPMENT)):
        devices.register_device(device_id, kind, now)
    fixes = [location(i, now - (90 - i) * 120_000 - i) for i in range(1, 90)]   # a fix every 2 min for 3 hours
    walk = [msg("w1", "location", f["seq"], f["ts"], lat=f["lat"], lon=f["lon"], accuracy_m=8.0) for f in fixes]
    devices.commit_batch([*walk, msg("w1", "status", 200, now, battery=15, worn=False)], [], now)
    yield client
    accounts.close()
    devices.close()


def test_the_fleet_lists_every_device_and_filters_by_state_and_search(fleet_web):
    client = fleet_web
    logged_in(client, "chen")
    page = client.get("/fleet").text
    assert all(d in page for d in ("w1", "w-quiet", "rower-1")) and "Wang Guilan" in page
    low = client.get("/fleet", params={"show": "low battery"}).text
    assert "w1" in low and "w-quiet" not in low and "rower-1" not in low
    assert "rower-1" in client.get("/fleet", params={"q": "ROWER"}).text
    assert "w1" in client.get("/fleet", params={"q": "wang"}).text   # by the wearer's name
    assert "w-quiet" in client.get("/fleet", params={"show": "offline"}).text


def test_a_device_track_for_a_window_as_a_page_and_as_geojson(fleet_web):
    client = fleet_web
    logged_in(client, "chen")
    assert "<svg" in client.get("/devices/w1").text
    everything = client.get("/api/devices/w1/track", params={"since": "2000-01-01T00:00"}).json()
    line = everything["features"][0]
    assert line["geometry"]["type"] == "LineString" and len(line["geometry"]["coordinates"]) == 89
    assert line["geometry"]["coordinates"][0][0] > 100   # [lon, lat], as GeoJSON orders them
    recent = client.get("/api/devices/w1/track").json()["features"][0]["properties"]["times_ms"]
    assert 59 <= len(recent) <= 60   # the default window: the last two hours of the three
    assert client.get("/api/devices/w1/track", params={"since": "9 o'clock"}).status_code == 422
    assert client.get("/api/devices/nobody/track").status_code == 404


def test_one_alert_s_card_comes_alone_with_its_place_in_the_queue_and_goes_once_resolved(web, svc):
    client, _ = web
    csrf = logged_in(client, "chen")
    aid = alert_id(svc)
    card = client.get(f"/console/queue/{aid}")
    assert card.status_code == 200 and f'data-alert-id="{aid}"' in card.text and 'data-sort="0-' in card.text
    assert client.post(f"/alerts/{aid}/resolve", data={"note": "fine"}, headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.get(f"/console/queue/{aid}").status_code == 204
    assert client.get("/console/queue/999").status_code == 204


def test_the_alert_map_zooms_in_on_request_and_the_live_region_keeps_the_zoom(web, svc):
    client, _ = web
    logged_in(client, "chen")
    aid = alert_id(svc)
    fit = client.get(f"/alerts/{aid}").text
    closer = client.get(f"/alerts/{aid}", params={"zoom": "2"}).text
    fit_zoom, closer_zoom = (int(p.split('data-zoom="')[1].split('"')[0]) for p in (fit, closer))
    assert closer_zoom == fit_zoom + 2
    assert f'data-live="/alerts/{aid}/live?zoom=2"' in closer and f'href="/alerts/{aid}?zoom=3"' in closer
    assert client.get(f"/alerts/{aid}", params={"zoom": "20"}).status_code == 422


def test_a_long_queue_draws_its_head_says_what_is_below_and_shows_all_on_request(svc, tmp_path):
    client, accounts, devices = make_web(svc, tmp_path, web=WebSettings(queue_page_size=1))
    logged_in(client, "chen")
    svc.observe([msg("w2", "sos", 1, DAY + 10), msg("w1", "status", 2, DAY + 20, battery=5, worn=True)], DAY + 20)
    head = client.get("/console").text
    assert head.count('<li class="card') == 1 and 'data-more="2"' in head
    assert "And 2 more open alerts below these" in head and "1 red" in head and "1 yellow" in head
    every = client.get("/console", params={"all": "1"}).text
    assert every.count('<li class="card') == 3 and "Show all" not in every
    assert 'data-live="/console/queue?all=1"' in every
    assert client.get("/console/queue", params={"all": "1"}).text.count('<li class="card') == 3
    accounts.close()
    devices.close()


@pytest.mark.parametrize("outcome, status", [("arrived", "sent"), ("resend", "pending")])
def test_an_operator_settles_a_send_nobody_could_tell_about_and_it_leaves_the_red_problems(web, svc, outcome, status):
    client, _ = web
    csrf = logged_in(client, "chen")
    [row] = svc.attempts(alert_id(svc))
    svc.engine.outbox.set_status(row.id, "operator", DAY + 1)
    assert "Needs operator: 1 notification" in client.get("/console/queue").text
    assert "It arrived" in client.get(f"/alerts/{alert_id(svc)}").text
    r = client.post(f"/attempts/{row.id}/settle", data={"outcome": outcome}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    assert svc.attempt(row.id).status == status
    assert ("operator_settled", "chen") in [(e.kind, e.actor) for e in svc.events(alert_id(svc))]
    assert "Needs operator" not in client.get("/console/queue").text
    again = client.post(f"/attempts/{row.id}/settle", data={"outcome": outcome}, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409
    bad = client.post(f"/attempts/{row.id}/settle", data={"outcome": "shrug"}, headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "outcome"
