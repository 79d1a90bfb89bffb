"""Builders for web tests: the app over a real alert service, account store and operational store."""
from __future__ import annotations

import re

from fastapi.testclient import TestClient

from dashboards.accounts import AccountStore, Role
from dashboards.app import create_app
from dashboards.config import WebSettings
from gateway.store import OperationalStore
from tests.unit.alert_support import DAY

TWILIO_TOKEN = "test-auth-token-0123456789abcdef"
BASE = "https://gw.example.test"
PASSWORD = "correct horse battery"
_CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def make_web(svc, tmp_path, *, operators=("chen",), admins=("admin",), web: WebSettings | None = None,
             ) -> tuple[TestClient, AccountStore, OperationalStore]:
    accounts = AccountStore(tmp_path / "web.db")
    for name in operators:
        accounts.create_account(name, PASSWORD, Role.OPERATOR, DAY)
    for name in admins:
        accounts.create_account(name, PASSWORD, Role.ADMIN, DAY)
    devices = OperationalStore(tmp_path / "gateway.db")
    app = create_app(svc, accounts, devices, twilio_auth_token=TWILIO_TOKEN, public_base_url=BASE, web=web)
    # Server errors come back as a 500 response (as a caller sees them), not as an exception in the test.
    return TestClient(app, raise_server_exceptions=False, base_url="http://testserver"), accounts, devices


def login_form_csrf(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    return _CSRF_FIELD.search(page.text)[1]


def login(client: TestClient, username: str, password: str = PASSWORD):
    """Log in through the form as a browser does; returns the response (303 on success)."""
    return client.post("/login", data={"username": username, "password": password, "csrf": login_form_csrf(client),
                                       "next": "/console"}, follow_redirects=False)


def session_csrf(client: TestClient) -> str:
    """The logged-in session's CSRF token, as the page gives it to its script."""
    page = client.get("/console")
    assert page.status_code == 200, page.text
    return _CSRF_META.search(page.text)[1]


def logged_in(client: TestClient, username: str) -> str:
    assert login(client, username).status_code == 303
    return session_csrf(client)
