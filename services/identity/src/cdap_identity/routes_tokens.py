"""Routes of tokens: `POST /v1/token` (OAuth2, form-encoded), `GET /.well-known/jwks.json`, RFC 7662
introspection and RFC 7009 revocation. They answer RFC 6749 errors (`{error, error_description}`), not
problem documents."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from cdap_identity import tokens
from cdap_identity.domain import OAuthError
from cdap_identity.tokens import TokenSettings
from cdap_identity.web import ClientIp, Clients, Issuing, Ring, Sessions, SignInLog, write
from cdap_shared.db import SessionDep

router = APIRouter(tags=["tokens"])
MAX_FIELD = 512
URLENCODED = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
OAUTH_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "error_description": {"type": "string"},
                    "enrolment_ticket": {
                        "type": "string",
                        "description": "with `totp enrolment required`: starts `POST /v1/totp/enrolment`",
                    },
                    "expires_in": {"type": "integer", "description": "seconds the enrolment ticket lives"},
                    "organisations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                        },
                        "description": "with `invalid_request`: the organisations whose accounts the "
                        "password opens; send one's `id` as `organisation_id`",
                    },
                },
            },
            "examples": {
                "bad_credentials": {
                    "value": {"error": "invalid_grant", "error_description": "bad credentials"}
                },
                "totp_required": {"value": {"error": "invalid_grant", "error_description": "totp required"}},
                "totp_enrolment_required": {
                    "summary": "a role or grant requires TOTP and none is enrolled: enrol it first",
                    "value": {
                        "error": "invalid_grant",
                        "error_description": "totp enrolment required",
                        "enrolment_ticket": "pZ2l0aHViLmNvbS9jZGFwL2lkZW50aXR5L3RpY2tldA",
                        "expires_in": 600,
                    },
                },
            },
        }
    }
}


def oauth_error(exc: OAuthError) -> JSONResponse:
    """The RFC 6749 answer: 401 for a client that failed to authenticate, 400 for the rest (§5.2)."""
    status = 401 if exc.error == "invalid_client" else 400
    return JSONResponse(exc.body(), status_code=status, headers=NO_STORE)


def _field(form: FormData, name: str, required: bool = True) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise OAuthError("invalid_request", f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise OAuthError("invalid_request", f"{name} is malformed")
    return value


async def _form(request: Request, max_fields: int) -> FormData:
    """The OAuth form; a form Starlette refuses (too many fields, a file) is an RFC 6749 error, not a
    problem document, so clients of the token endpoint see one error format (found by schemathesis)."""
    if request.headers.get("content-type", "").partition(";")[0].strip().lower() == URLENCODED:
        # What Starlette's parser makes of this encoding (bytes as latin-1, then percent-decoding as
        # UTF-8), for a fraction of its cost on the hot path of partner systems.
        body = (await request.body()).decode("latin-1")
        try:
            return FormData(dict(parse_qsl(body, keep_blank_values=True, max_num_fields=max_fields)))
        except ValueError as exc:
            raise OAuthError("invalid_request", f"more than {max_fields} fields") from exc
    try:
        return await request.form(max_files=0, max_fields=max_fields)
    except HTTPException as exc:
        raise OAuthError("invalid_request", str(exc.detail)) from exc


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed Basic credentials") from exc
    return client_id, secret


@router.post(
    "/v1/token",
    responses={
        400: {"description": "RFC 6749 error", **OAUTH_ERROR},
        401: {"description": "invalid_client", **OAUTH_ERROR},
        503: {"description": "temporarily_unavailable", **OAUTH_ERROR},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                URLENCODED: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            name: {"type": "string"}
                            for name in (
                                "grant_type",
                                "username",
                                "password",
                                "totp",
                                "organisation_id",
                                "client_id",
                                "client_secret",
                                "refresh_token",
                            )
                        },
                    },
                    "examples": {
                        "password": {
                            "summary": "A person (TOTP once enrolled)",
                            "value": {
                                "grant_type": "password",
                                "username": "marie.durand@ccas-rouen.example",
                                "password": "correct horse battery staple",
                                "totp": "492039",
                            },
                        },
                        "client_credentials": {
                            "summary": "A partner system",
                            "value": {
                                "grant_type": "client_credentials",
                                "client_id": "cli_2b7f4c1e",
                                "client_secret": "s3cr3t-shown-once",
                            },
                        },
                        "refresh_token": {
                            "summary": "A new access token for a signed-in person",
                            "value": {"grant_type": "refresh_token", "refresh_token": "rt_Q2RhcC1yZWZyZXNo"},
                        },
                    },
                }
            }
        }
    },
)
async def token(
    request: Request,
    issuing: Issuing,
    sessions: Sessions,
    clients: Clients,
    sign_ins: SignInLog,
    ip: ClientIp,
) -> JSONResponse:
    """Exchange credentials for a 5-minute access token (EdDSA JWT) and, for people, a refresh token.

    A person whose roles or grants require TOTP (CAF staff, T1, T5) and who has none enrolled gets no
    token: the answer is `invalid_grant` / `totp enrolment required` with an `enrolment_ticket`, to use
    with `POST /v1/totp/enrolment` then `POST /v1/totp/enrolment/confirm`, which signs them in."""
    try:
        if "form" not in request.headers.get("content-type", ""):
            raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
        form = await _form(request, max_fields=16)
        grant_type = _field(form, "grant_type")
        if grant_type == "client_credentials":
            # Partner systems' hot path: no ORM session, the client comes from the cache.
            client_id, secret = _basic_auth(request) or (
                _field(form, "client_id") or "",
                _field(form, "client_secret") or "",
            )
            body = await tokens.client_credentials_grant(clients, sign_ins, issuing, client_id, secret, ip)
        elif grant_type in ("password", "refresh_token"):
            async with sessions() as session:
                # A refusal keeps what it recorded: failed attempts, locks, enrolment tickets, their events.
                body = await write(
                    session, _person_grant(session, issuing, grant_type, form, ip), keep=(OAuthError,)
                )
        else:
            raise OAuthError("unsupported_grant_type", "use password, client_credentials or refresh_token")
        return JSONResponse(body, headers=NO_STORE)
    except OAuthError as exc:
        return oauth_error(exc)


async def _person_grant(
    session: AsyncSession, cfg: TokenSettings, grant_type: str, form: FormData, ip: str | None
) -> dict[str, object]:
    if grant_type == "password":
        return await tokens.password_grant(
            session,
            cfg,
            _field(form, "username") or "",
            _field(form, "password") or "",
            _field(form, "totp", required=False),
            _field(form, "organisation_id", required=False),
            ip,
        )
    return await tokens.refresh_grant(session, cfg, _field(form, "refresh_token") or "")


@router.get("/.well-known/jwks.json")
async def jwks(ring: Ring) -> JSONResponse:
    """The public keys that verify CDAP access tokens (current and recently retired)."""
    return JSONResponse(ring.jwks(datetime.now(UTC)), headers={"Cache-Control": "public, max-age=60"})


@router.post(
    "/v1/introspect",
    responses={
        200: {"content": {"application/json": {"example": {"active": True}}}},
        400: {"description": "RFC 6749 error", **OAUTH_ERROR},
    },
)
async def introspect(request: Request, session: SessionDep) -> JSONResponse:
    """RFC 7662 introspection of a refresh token, the token itself being the credential: `active` while
    its sign-in session (the token's family) is neither revoked (sign-out, theft) nor expired. The
    portal asks it, so that a copied session cookie stops working once its owner signed out."""
    try:
        token = _field(await _form(request, max_fields=4), "token")
    except OAuthError as exc:
        return oauth_error(exc)
    return JSONResponse({"active": await tokens.refresh_family_alive(session, token or "")}, headers=NO_STORE)


@router.post("/v1/revoke", status_code=200, responses={400: {"description": "RFC 7009 error", **OAUTH_ERROR}})
async def revoke(request: Request, session: SessionDep) -> JSONResponse:
    """RFC 7009 token revocation for refresh tokens (logout): 200 whether the token existed or not; an access
    token (a JWT) is answered `unsupported_token_type`, as it cannot be revoked."""
    try:
        form = await _form(request, max_fields=4)
        presented = form.get("token")
        if isinstance(presented, str) and presented.count(".") == 2:
            # A JWT access token: every service verifies it offline, so it cannot be revoked here (it expires
            # within minutes). Say so (RFC 7009 §2.2.1) rather than answer 200 as if it had been.
            raise OAuthError("unsupported_token_type", "only refresh tokens are revoked; access ones expire")
        token = _field(form, "token")
    except OAuthError as exc:
        return oauth_error(exc)
    await write(session, tokens.revoke_refresh(session, token or ""))
    return JSONResponse({}, headers=NO_STORE)
