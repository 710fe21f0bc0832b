"""Routes of enrolling TOTP at login: `POST /v1/totp/enrolment` (start) and `POST /v1/totp/enrolment/confirm`.

No bearer token here: the enrolment ticket `POST /v1/token` handed out after checking the password is
the credential. Confirming with a first code signs the person in (the answer is a token response).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cdap_identity import enrolment, tokens
from cdap_identity.domain import Refused
from cdap_identity.routes_tokens import NO_STORE
from cdap_identity.schemas import EnrolmentConfirm, EnrolmentStart, EnrolmentStarted, TokenResponse
from cdap_identity.web import ClientIp, Issuing, write
from cdap_shared.db import SessionDep
from cdap_shared.http import Now

router = APIRouter(tags=["tokens"])


@router.post(
    "/v1/totp/enrolment",
    response_model=EnrolmentStarted,
    responses={400: {"description": "unknown or expired ticket (`reason`: `invalid_ticket`)"}},
)
async def start_enrolment(body: EnrolmentStart, session: SessionDep, now: Now) -> JSONResponse:
    """Start (or show again) the TOTP enrolment a ticket names: the new secret, its `otpauth://` URI and
    QR code (inline SVG). Nothing is enrolled until `POST /v1/totp/enrolment/confirm`."""
    started = await write(session, enrolment.start(session, body.ticket, now))
    return JSONResponse(EnrolmentStarted(**started.__dict__).model_dump(), headers=NO_STORE)


@router.post(
    "/v1/totp/enrolment/confirm",
    response_model=TokenResponse,
    responses={
        400: {
            "description": "unknown or expired ticket, or wrong code (`reason`: `invalid_ticket`, `bad_code`)"
        },
        403: {"description": "the account is locked, suspended or must reset its password"},
        409: {"description": "the enrolment was not started (`reason`: `not_started`)"},
    },
)
async def confirm_enrolment(
    body: EnrolmentConfirm, session: SessionDep, issuing: Issuing, ip: ClientIp
) -> JSONResponse:
    """Confirm the enrolment with the first code the app shows: the secret becomes the account's second
    factor and the person is signed in (access and refresh tokens, as `POST /v1/token` answers).
    Wrong codes count towards the account's lockout."""
    # A wrong code counts towards the lockout, like a wrong password: the refusal is committed too.
    confirmed = tokens.confirm_enrolment(session, issuing, body.ticket, body.code, ip)
    answer = await write(session, confirmed, keep=(Refused,))
    return JSONResponse(answer, headers=NO_STORE)
