"""Admin pages: operator accounts (create, disable, reset a password) and integrators' API tokens."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dashboards.accounts import AccountError, AccountStore, Role
from dashboards.auth import Admin
from dashboards.pages import render


def admin_router(accounts: AccountStore) -> APIRouter:
    router = APIRouter(prefix="/admin", include_in_schema=False)

    def page(request: Request, message: str = "", new_token: str = "", status: int = 200) -> Response:
        return render(request, "admin.html", {"accounts": accounts.accounts(), "tokens": accounts.tokens(),
                                              "message": message, "new_token": new_token, "roles": list(Role)}, status)

    @router.get("")
    async def admin_page(request: Request, actor: Admin) -> Response:
        return page(request)

    @router.post("/accounts")
    async def create_account(request: Request, actor: Admin, username: Annotated[str, Form(max_length=40)],
                             password: Annotated[str, Form(max_length=1000)], role: Annotated[Role, Form()]) -> Response:
        try:
            await run_in_threadpool(accounts.create_account, username, password, role, int(time.time() * 1000))
        except AccountError as e:
            return page(request, str(e), status=422)
        return RedirectResponse("/admin", status_code=303)

    @router.post("/accounts/{username}/password")
    async def reset_password(request: Request, actor: Admin, username: str,
                             password: Annotated[str, Form(max_length=1000)]) -> Response:
        try:
            await run_in_threadpool(accounts.set_password, username, password)
        except AccountError as e:
            return page(request, str(e), status=422)
        return page(request, f"Password of {username} changed; their sessions have ended.")

    @router.post("/accounts/{username}/disabled")
    async def set_disabled(request: Request, actor: Admin, username: str, disabled: Annotated[bool, Form()]) -> Response:
        if disabled and username == actor.name:
            return page(request, "You cannot disable your own account.", status=422)
        try:
            accounts.set_disabled(username, disabled)
        except AccountError as e:
            return page(request, str(e), status=422)
        return RedirectResponse("/admin", status_code=303)

    @router.post("/tokens")
    async def create_token(request: Request, actor: Admin, name: Annotated[str, Form(max_length=60)],
                           role: Annotated[Role, Form()] = Role.OPERATOR) -> Response:
        try:
            token = accounts.create_token(name, role, actor.name, int(time.time() * 1000))
        except AccountError as e:
            return page(request, str(e), status=422)
        return page(request, f"Token {name} created. Copy it now: it is shown only once.", new_token=token)

    @router.post("/tokens/{name}/revoke")
    async def revoke_token(request: Request, actor: Admin, name: str) -> Response:
        try:
            accounts.revoke_token(name, int(time.time() * 1000))
        except AccountError as e:
            return page(request, str(e), status=422)
        return RedirectResponse("/admin", status_code=303)

    return router
