"""Residents' exercise pages: claiming a session by its code (the machine's QR link, or typed in), and
the personal record behind a resident's own link. No operator login: a resident proves who they are
with a one-time SMS code (dashboards/claims.py), and from then on their phone keeps their record link
in a cookie, so the next claim is one tap.

Every refusal says why in words a resident understands, with the HTTP status to match: an unknown
code 404, a code already used 409, an expired one 410, too many failures from one client 429.
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from alerts.directory import Resident
from alerts.notifiers import SendError
from alerts.service import AlertService
from dashboards.claims import OneTimeCodes, Throttle, normalise_phone
from dashboards.exercise_record import chart_svg, count_word, local_midnight_ms, machine_name, week_of, weeks
from dashboards.pages import render
from dashboards.record_links import RecordLinks
from gateway.exercise_store import ExerciseSession, normalise_code, spaced
from gateway.store import OperationalStore

log = logging.getLogger(__name__)

COOKIE = "ec_record"
COOKIE_DAYS = 365
RECORD_WEEKS = 8
Field = Annotated[str, Form(max_length=100)]
ClaimState = Literal["unknown", "claimable", "claimed", "expired"]

TEXTS = {
    "code": {"zh-CN": "您的运动记录验证码：{code}，5分钟内有效。请勿告诉他人。",
             "en": "Your exercise record code is {code}. It works for 5 minutes. Do not tell it to anyone."},
    "link": {"zh-CN": "{name}，您的运动记录：{url} 此链接只属于您，请勿转发。",
             "en": "{name}, your exercise record: {url} This link is yours alone; please do not forward it."},
}


def text(kind: str, language: str, **values: str) -> str:
    table = TEXTS[kind]
    return (table.get(language) or table["en"]).format(**values)


def claim_state(session: ExerciseSession | None, now_ms: int, ttl_ms: int) -> ClaimState:
    if session is None:
        return "unknown"
    if session.resident_id is not None:
        return "claimed"
    if session.closed_ms is not None and now_ms > session.closed_ms + ttl_ms:
        return "expired"
    return "claimable"


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session in words and numbers a resident reads."""

    session: ExerciseSession
    machine: str
    count_word: str

    @property
    def minutes(self) -> str:
        m, s = divmod(self.session.elapsed_s, 60)
        return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def exercise_router(service: AlertService, devices: OperationalStore, links: RecordLinks, *, public_base_url: str,
                    phone_prefix: str, cookie_secure: bool, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    throttle, one_time = Throttle(), OneTimeCodes()
    directory = service.directory
    tz = ZoneInfo(service.settings.timezone)
    base = public_base_url.rstrip("/")
    names = {e.device_id: e.name for e in directory.community.equipment if e.name}

    def now_ms() -> int:
        return int(clock() * 1000)

    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def view(s: ExerciseSession) -> SessionView:
        return SessionView(s, names.get(s.device_id) or machine_name(s.equipment_type), count_word(s.equipment_type))

    def page(request: Request, name: str, status: int = 200, **context: object) -> Response:
        return render(request, name, {"tz": service.settings.timezone, **context}, status)

    def refused(request: Request, status: int, message: str, typed: str = "") -> Response:
        return page(request, "claim_code.html", status, message=message, typed=typed)

    def throttled(request: Request, wait_s: int) -> Response:
        r = page(request, "resident_message.html", 429, title="Please wait",
                 message=f"Too many tries that did not work from this phone. Try again in {(wait_s + 59) // 60} min.")
        r.headers["Retry-After"] = str(wait_s)
        return r

    def resident_in_cookie(request: Request) -> Resident | None:
        rid = links.resident_of(request.cookies.get(COOKIE, ""))
        return directory.resident(rid)

    def keep_link(response: Response, key: str) -> Response:
        response.set_cookie(COOKIE, key, max_age=COOKIE_DAYS * 86_400, httponly=True, samesite="lax",
                            secure=cookie_secure, path="/")
        return response

    def lookup(request: Request, code: str) -> tuple[ExerciseSession | None, ClaimState, Response | None]:
        """The session a code names, or the response that refuses it."""
        t = now_ms()
        if wait := throttle.retry_after_s(client(request), t):
            return None, "unknown", throttled(request, wait)
        normal = normalise_code(code)
        session = devices.session_by_code(normal) if normal else None
        state = claim_state(session, t, devices.claim_ttl_ms)
        if state == "unknown":
            throttle.fail(client(request), t)
            return None, state, refused(request, 404, "No exercise session has this code. Check the code on the "
                                                      "machine's screen and type it again.", code[:20])
        return session, state, None

    def claim_page(request: Request, session: ExerciseSession, state: ClaimState, status: int = 200,
                   **context: object) -> Response:
        codes = {"claimable": 200, "claimed": 409, "expired": 410}
        mine = resident_in_cookie(request)
        return page(request, "claim.html", status if status != 200 else codes.get(state, 200), s=view(session),
                    state=state, mine=mine, code=session.claim_code, spaced=spaced(session.claim_code),
                    theirs=mine is not None and session.resident_id == mine.id,
                    until_ms=(session.closed_ms or 0) + devices.claim_ttl_ms, **context)

    def claim_for(request: Request, session: ExerciseSession, resident: Resident, new_key: bool) -> Response:
        t = now_ms()
        if not devices.claim_session(session.claim_code, resident.id, t):
            return claim_page(request, session, "claimed")
        if session.open:
            service.session_claimed(session.device_id, session.session_id, resident.id)
        log.info("exercise session %s of %s claimed by resident %s", session.session_id, session.device_id, resident.id)
        key = request.cookies.get(COOKIE, "")
        if new_key or links.resident_of(key) != resident.id:
            first = not links.has_link(resident.id)
            key = links.create(resident.id, t)
            if first and resident.phone:
                try:
                    service.send_text(resident.phone, text("link", resident.language, name=resident.name,
                                                           url=f"{base}/me/{key}"), resident.language)
                except SendError:
                    log.warning("could not text resident %s their record link", resident.id, exc_info=True)
        target = f"/me/{key}?added={quote(session.claim_code)}"
        return keep_link(RedirectResponse(target, status_code=303), key)

    @router.get("/c")
    async def enter_code(request: Request, code: str = "") -> Response:
        if code:
            return RedirectResponse(f"/c/{quote(code.strip()[:40])}", status_code=303)
        return page(request, "claim_code.html", typed="", message="")

    @router.get("/c/{code}")
    async def claim(request: Request, code: str) -> Response:
        session, state, refusal = lookup(request, code)
        if refusal is not None or session is None:
            return refusal or refused(request, 404, "")
        return claim_page(request, session, state)

    @router.get("/c/{code}/qr.svg")
    async def qr(request: Request, code: str) -> Response:
        session, _, refusal = lookup(request, code)
        if refusal is not None or session is None:
            return Response("no such code", status_code=refusal.status_code if refusal else 404, media_type="text/plain")
        out = io.BytesIO()
        segno.make(f"{base}/c/{session.claim_code}", error="m").save(out, kind="svg", scale=6, border=2,
                                                                       title=f"Claim code {spaced(session.claim_code)}")
        return Response(out.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=600"})

    @router.post("/c/{code}/phone")
    async def send_code(request: Request, code: str, phone: Field) -> Response:
        session, state, refusal = lookup(request, code)
        if refusal is not None or session is None:
            return refusal or refused(request, 404, "")
        if state != "claimable":
            return claim_page(request, session, state)
        number = normalise_phone(phone, phone_prefix)
        resident = directory.resident_by_phone(number) if number else None
        if number is None or resident is None:
            throttle.fail(client(request), now_ms())
            what = ("That does not look like a phone number." if number is None else
                    "This number is not registered for an exercise record. The service centre can add it.")
            return claim_page(request, session, state, 400, error=what, phone=phone[:30])
        t = now_ms()
        if wait := one_time.wait_s(number, t):
            return claim_page(request, session, state, step="code", phone=number,
                              note=f"A code was sent a moment ago. A new one can be sent in {wait} s.")
        try:
            service.send_text(number, text("code", resident.language, code=one_time.issue(number, t)), resident.language)
        except SendError:
            log.warning("could not send a one-time code to a resident", exc_info=True)
            return claim_page(request, session, state, 503, phone=number,
                              error="The text message could not be sent just now. Please try again in a minute.")
        return claim_page(request, session, state, step="code", phone=number,
                          note="We sent a 6-digit code by text message to this number.")

    @router.post("/c/{code}/verify")
    async def verify(request: Request, code: str, phone: Field, otp: Field) -> Response:
        session, state, refusal = lookup(request, code)
        if refusal is not None or session is None:
            return refusal or refused(request, 404, "")
        if state != "claimable":
            return claim_page(request, session, state)
        number = normalise_phone(phone, phone_prefix) or ""
        resident = directory.resident_by_phone(number)
        if resident is None or not one_time.check(number, otp, now_ms()):
            throttle.fail(client(request), now_ms())
            return claim_page(request, session, state, 400, step="code", phone=number,
                              error="That code is not right, or it has expired. Check the text message, "
                                    "or ask for a new code.")
        return claim_for(request, session, resident, new_key=True)

    @router.post("/c/{code}/mine")
    async def claim_mine(request: Request, code: str) -> Response:
        session, state, refusal = lookup(request, code)
        if refusal is not None or session is None:
            return refusal or refused(request, 404, "")
        resident = resident_in_cookie(request)
        if state != "claimable" or resident is None:
            return claim_page(request, session, state)
        return claim_for(request, session, resident, new_key=False)

    @router.get("/record")
    async def my_record(request: Request) -> Response:
        """The record of the resident this phone belongs to (their link, kept in a cookie)."""
        key = request.cookies.get(COOKIE, "")
        if links.resident_of(key) is None:
            return page(request, "resident_message.html", 404, title="Open the link in your text message",
                        message="This phone does not know your record yet. Open the link in the text message you "
                                "got after your first session, or add a session on a machine.")
        return RedirectResponse(f"/me/{key}", status_code=303)

    @router.get("/me/{key}")
    async def record(request: Request, key: str, added: str = "") -> Response:
        t = now_ms()
        if wait := throttle.retry_after_s(client(request), t):
            return throttled(request, wait)
        resident = directory.resident(links.resident_of(key))
        if resident is None:
            throttle.fail(client(request), t)
            return page(request, "resident_message.html", 404, title="This link does not work",
                        message="This record link does not work any more. The service centre can send you a new "
                                "one, or claim your next session on a machine and you will get one.")
        since = week_of(t, tz) - timedelta(weeks=RECORD_WEEKS - 1)
        sessions = devices.sessions_of(resident.id, since_ts=local_midnight_ms(since, tz))
        ws = weeks(sessions, t, tz, RECORD_WEEKS)
        this_week = ws[-1]
        response = page(request, "record.html", resident=resident, sessions=[view(s) for s in sessions],
                        week=this_week, week_types=sorted(this_week.by_type.items()), chart=chart_svg(ws),
                        added=normalise_code(added) if added else None, machine_name=machine_name,
                        count_word=count_word)
        if request.cookies.get(COOKIE) != key:
            keep_link(response, key)
        return response

    @router.post("/me/forget")
    async def forget(request: Request) -> Response:
        response = page(request, "resident_message.html", title="Done",
                        message="This phone no longer opens your exercise record. Your record is kept; the link "
                                "in your text message still works.")
        response.delete_cookie(COOKIE, path="/")
        return response

    return router

