"""Twilio webhooks: delivery status callbacks and the "press 1 to accept" Gather action.

Every request must carry a valid X-Twilio-Signature for the public URL it was
sent to (config's public base URL + path + query); anything else gets 403 and
changes nothing.
"""
# No `from __future__ import annotations`: FastAPI must resolve the local `Signed` alias at definition time.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from alerts.notifiers.twilio import GATHER_ROUTE, STATUS_ROUTE, parse_status_callback, say_twiml, voice_twiml
from alerts.service import AlertService
from alerts.wording import accepted_thanks
from dashboards.params import RowId


def _twiml(body: str) -> Response:
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + body, media_type="application/xml")


def twilio_router(service: AlertService, auth_token: str, public_base_url: str) -> APIRouter:
    validator = RequestValidator(auth_token)
    base = public_base_url.rstrip("/")

    async def signed_form(request: Request) -> dict[str, str]:
        """The form fields of a request Twilio signed; 403 otherwise."""
        form = await request.form()
        params: dict[str, Any] = {}
        for k, v in form.multi_items():
            params.setdefault(k, []).append(str(v))
        params = {k: v[0] if len(v) == 1 else v for k, v in params.items()}
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        # Without a configured auth token nothing can be verified, so nothing is accepted.
        if not auth_token or not signature or not validator.validate(url, params, signature):
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        return {k: v if isinstance(v, str) else v[-1] for k, v in params.items()}

    Signed = Annotated[dict[str, str], Depends(signed_form)]
    router = APIRouter(tags=["twilio"])

    @router.post(STATUS_ROUTE, status_code=204)
    async def delivery_status(attempt_id: RowId, form: Signed) -> Response:
        callback = parse_status_callback(form)
        if callback is None:
            raise HTTPException(status_code=400, detail="no MessageStatus or CallStatus")
        if await run_in_threadpool(service.attempt, attempt_id) is None:
            raise HTTPException(status_code=404, detail="no such attempt")
        await run_in_threadpool(service.record_delivery_status, attempt_id, callback.status, None, callback.provider_id)
        return Response(status_code=204)

    @router.post(GATHER_ROUTE)
    async def gather(attempt_id: RowId, request: Request, form: Signed) -> Response:
        row = await run_in_threadpool(service.attempt, attempt_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such attempt")
        if form.get("Digits") == "1":
            await run_in_threadpool(service.accept_by_attempt, attempt_id)
            return _twiml(say_twiml(accepted_thanks(row.language), row.language))
        # Another key: say the alert again and ask once more.
        return _twiml(voice_twiml(row.text, row.language, base + request.url.path))

    return router
