"""Who is asking: the session cookie or a named API token, the CSRF check, roles, and the login pages.

Every route but the login page, Twilio's signed webhooks and /health depends on `operator` (or
`admin`). A browser request without a session is sent to the login page; any other gets 401.
A state-changing request made with a session cookie must carry the session's CSRF token, in the
`X-CSRF-Token` header or a `csrf` form field; API tokens are never sent by a browser on its own,
so they need none.
"""
from __future__ import annotations

import hmac
import secrets
import time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dashboards.accounts import AccountStore, Actor, LoginThrottled
from dashboards.pages import render

SESSION_COOKIE = "eldercare_session"
LOGIN_CSRF_COOKIE = "eldercare_login_csrf"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotLoggedIn(Exception):
    """Raised by `operator`; the app turns it into a redirect to the login page (browsers) or a 401."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def accounts_of(request: Request) -> AccountStore:
    store: AccountStore = request.app.state.accounts
    return store


async def operator(request: Request) -> Actor:
    """Anyone logged in (or holding a live API token); state changes by session must carry the CSRF token."""
    store = accounts_of(request)
    auth = request.headers.get("Authorization", "")
    actor: Actor | None = None
    if auth.startswith("Bearer "):
        actor = store.token_actor(auth.removeprefix("Bearer ").strip())
    elif (token := request.cookies.get(SESSION_COOKIE)) is not None:
        actor = store.session_actor(token, _now_ms())
    if actor is None:
        raise NotLoggedIn()
    if actor.csrf is not None and request.method not in _SAFE_METHODS:
        given = request.headers.get("X-CSRF-Token")
        if given is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            given = str((await request.form()).get("csrf", ""))
        if not given or not hmac.compare_digest(given, actor.csrf):
            raise HTTPException(status_code=403, detail="CSRF token missing or wrong: reload the page and try again")
    request.state.actor = actor   # pages show who is logged in
    return actor


async def admin(actor: Annotated[Actor, Depends(operator)]) -> Actor:
    if not actor.is_admin:
        raise HTTPException(status_code=403, detail="this needs an admin account")
    return actor


Operator = Annotated[Actor, Depends(operator)]
Admin = Annotated[Actor, Depends(admin)]


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never `//host` or `https://...`, which would send a fresh login elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def login_redirect(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here, safe='')}", status_code=303)


def login_router(cookie_secure: bool) -> APIRouter:
    router = APIRouter(tags=["login"], include_in_schema=False)

    def _form(request: Request, message: str = "", status: int = 200, username: str = "") -> Response:
        # Login CSRF: a double-submit cookie, so another site cannot log a browser into an account of its choosing.
        csrf = secrets.token_urlsafe(24)
        response = render(request, "login.html", {"csrf": csrf, "message": message, "username": username,
                                                  "next": _safe_next(request.query_params.get("next"))}, status)
        response.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=cookie_secure, path="/login")
        return response

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        return _form(request)

    @router.post("/login")
    async def login(request: Request, username: Annotated[str, Form(max_length=200)],
                    password: Annotated[str, Form(max_length=1000)], csrf: Annotated[str, Form(max_length=200)] = "",
                    next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(csrf, expected):
            return _form(request, "The form had expired. Please log in again.", 403, username)
        store = accounts_of(request)
        try:
            account = await run_in_threadpool(store.verify_login, username, password, _now_ms())
        except LoginThrottled as e:
            minutes = (e.retry_after_s + 59) // 60
            response = _form(request, f"Too many failed logins for this account. Try again in {minutes} min, "
                                      "or ask an admin to reset the password.", 429, username)
            response.headers["Retry-After"] = str(e.retry_after_s)
            return response
        if account is None:
            return _form(request, "Wrong username or password.", 401, username)
        token = await run_in_threadpool(store.start_session, account.username, _now_ms())
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=cookie_secure,
                            max_age=store.session_ms // 1000, path="/")
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @router.post("/logout")
    async def logout(request: Request, actor: Operator) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            accounts_of(request).end_session(token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return router
