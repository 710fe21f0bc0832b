"""Signing in (password, then a TOTP code when identity asks for one), signing out, account activation."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cdap_portal import domain, texts
from cdap_portal.auth import start_session
from cdap_portal.clients import ApiError, OAuthFailure
from cdap_portal.session import ENROLMENT_COOKIE, ENROLMENT_SECONDS, PENDING_COOKIE, PENDING_SECONDS
from cdap_portal.web import (
    CsrfForm,
    clear_session,
    field,
    portal_of,
    redirect,
    render,
    secure_cookie,
    session_of,
)

router = APIRouter(tags=["authentification"])

NOTICES = {
    "expiree": "Votre session a expiré. Reconnectez-vous pour continuer.",
    "deconnecte": "Vous êtes déconnecté.",
    "active": "Votre compte est activé. Vous pouvez vous connecter.",
    "etape": "L'étape de connexion a expiré. Recommencez.",
    "suspendu": texts.DENIAL_REASONS["suspended"],
    "reinitialisation": "Votre mot de passe doit être changé : suivez le lien reçu par courriel.",
}
TOTP = re.compile(r"^\d{6}$")
ENROLMENT_REQUIRED = "totp enrolment required"  # identity's error_description, with an enrolment ticket


@router.get("/login")
async def login_page(request: Request, raison: str | None = None, suite: str | None = None) -> Response:
    if session_of(request).authenticated:
        return redirect(domain.safe_next(suite))
    return render(
        request, "login.html", notice=NOTICES.get(raison or ""), suite=domain.safe_next(suite), values={}
    )


@router.post("/login")
async def login(request: Request, form: CsrfForm) -> Response:
    """Step `password` (e-mail + password), then as identity asks: `organisation` (which account, when the
    password opens several), `totp` (the code) or `enrol` (a first TOTP enrolment). Between steps the
    e-mail and password wait in a pending cookie, the enrolment ticket in its own."""
    suite = domain.safe_next(field(form, "suite", 500))
    organisation_id = field(form, "organisation_id", 64)
    if field(form, "step") == "totp":
        return await _totp_step(request, field(form, "totp", 10), suite, organisation_id)
    if field(form, "step") == "enrol":
        return await _enrolment_step(request, field(form, "totp", 10), suite)
    if field(form, "step") == "organisation":
        pending = _pending(request)
        if pending is None or not organisation_id:
            return redirect("/login?raison=etape")
        return await _attempt(request, suite, *pending, organisation_id)
    email, password = field(form, "email", 254), form.get("password")
    password = password if isinstance(password, str) else ""
    errors = domain.check_sign_in({"email": email, "password": password})
    if errors:
        return _login_again(request, suite, email, errors=errors)
    return await _attempt(request, suite, email, password)


async def _attempt(
    request: Request, suite: str, email: str, password: str, organisation_id: str = ""
) -> Response:
    """The e-mail and password (and the organisation, once asked) at identity, and the next step."""
    try:
        tokens = await portal_of(request).upstreams.token(_password_form(email, password, organisation_id))
    except OAuthFailure as exc:
        if exc.description == "totp required":
            return _pending_step(
                request, "login_totp.html", email, password, suite=suite, organisation_id=organisation_id
            )
        ticket = exc.extra.get("enrolment_ticket")
        if exc.description == ENROLMENT_REQUIRED and isinstance(ticket, str):
            return await _start_enrolment(request, suite, ticket)
        organisations = exc.extra.get("organisations")
        if exc.error == "invalid_request" and isinstance(organisations, list) and organisations:
            # The password opens accounts in several organisations: which one (identity asks only now).
            return _pending_step(
                request, "login_organisation.html", email, password, suite=suite, organisations=organisations
            )
        return _login_again(request, suite, email, failure=_oauth_text(exc))
    return _signed_in(request, tokens, suite)


def _password_form(email: str, password: str, organisation_id: str) -> dict[str, str]:
    form = {"grant_type": "password", "username": email, "password": password}
    return form | ({"organisation_id": organisation_id} if organisation_id else {})


def _pending(request: Request) -> tuple[str, str] | None:
    """The e-mail and password of the sign-in under way (the pending cookie), if still valid."""
    raw = request.cookies.get(PENDING_COOKIE)
    return portal_of(request).codec.decode_pending(raw) if raw else None


async def _start_enrolment(request: Request, suite: str, ticket: str) -> Response:
    """The password was right but the account must first enrol TOTP: show the key, keep the ticket."""
    response = await _enrolment_page(request, suite, ticket)
    sealed = portal_of(request).codec.encode_enrolment(ticket)
    return _with_step_cookie(request, response, ENROLMENT_COOKIE, sealed, ENROLMENT_SECONDS)


async def _enrolment_page(
    request: Request, suite: str, ticket: str, errors: dict[str, str] | None = None
) -> Response:
    """The key to enrol (identity gives the same one again for the same ticket) and the code field."""
    try:
        enrolment = await portal_of(request).upstreams.start_enrolment(ticket)
    except ApiError as exc:
        if exc.status == 400:  # the ticket expired: sign in again for a new one
            return _restart(ENROLMENT_COOKIE)
        raise
    key = totp_key(str(enrolment["secret"]), enrolment.get("otpauth_uri"), enrolment.get("qr_svg"))
    return render(
        request, "login_enrol.html", status=400 if errors else 200, suite=suite, errors=errors or {}, **key
    )


async def _enrolment_step(request: Request, code: str, suite: str) -> Response:
    """The first code of the new key: identity enrols it and signs the person in."""
    portal = portal_of(request)
    raw = request.cookies.get(ENROLMENT_COOKIE)
    ticket = portal.codec.decode_enrolment(raw) if raw else None
    if ticket is None:
        return redirect("/login?raison=etape")
    if not TOTP.fullmatch(code):
        return await _enrolment_page(request, suite, ticket, {"totp": "Le code comporte 6 chiffres."})
    try:
        tokens = await portal.upstreams.confirm_enrolment(ticket, code)
    except ApiError as exc:
        if exc.reason == "bad_code":
            wrong = "Code incorrect. Vérifiez l'heure du téléphone, puis saisissez le code affiché."
            return await _enrolment_page(request, suite, ticket, {"totp": wrong})
        if exc.status in (400, 403, 409):  # ticket expired, account locked or suspended meanwhile
            return _restart(ENROLMENT_COOKIE)
        raise
    return _signed_in(request, tokens, suite)


def _restart(cookie: str) -> Response:
    response = redirect("/login?raison=etape")
    response.delete_cookie(cookie, path="/login")
    return response


def totp_key(secret: str, otpauth_uri: object, qr_svg: object) -> dict[str, Any]:
    """What `_totp_key.html` shows. The SVG is identity's (drawn by segno from the otpauth URI, over
    the back channel), so it is put in the page as markup."""
    return {
        "secret": secret,
        "secret_groups": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "otpauth_uri": otpauth_uri,
        "qr_svg": qr_svg if isinstance(qr_svg, str) else None,
    }


async def _totp_step(request: Request, code: str, suite: str, organisation_id: str) -> Response:
    pending = _pending(request)
    if pending is None:
        return redirect("/login?raison=etape")
    email, password = pending
    again = {"suite": suite, "organisation_id": organisation_id}
    if not TOTP.fullmatch(code):
        errors = {"totp": "Le code comporte 6 chiffres."}
        return render(request, "login_totp.html", status=400, errors=errors, **again)
    try:
        tokens = await portal_of(request).upstreams.token(
            _password_form(email, password, organisation_id) | {"totp": code}
        )
    except OAuthFailure as exc:
        if exc.description == "bad credentials":
            # The password was right a moment ago: it is the code that is wrong (or already used).
            errors = {"totp": "Code incorrect ou déjà utilisé. Attendez le code suivant."}
            return render(request, "login_totp.html", status=400, errors=errors, **again)
        response = _login_again(request, suite, email, failure=_oauth_text(exc))
        response.delete_cookie(PENDING_COOKIE, path="/login")
        return response
    return _signed_in(request, tokens, suite)


def _oauth_text(exc: OAuthFailure) -> str:
    if exc.error == "invalid_request" and "several accounts" in exc.description:
        return "Plusieurs comptes utilisent cette adresse. Contactez votre CAF."
    return texts.login_error(exc.description)


def _signed_in(request: Request, tokens: dict[str, Any], suite: str) -> Response:
    start_session(request, tokens)
    response = redirect(suite)
    for cookie in (PENDING_COOKIE, ENROLMENT_COOKIE):  # the steps are over
        response.delete_cookie(cookie, path="/login")
    return response


def _pending_step(request: Request, template: str, email: str, password: str, **context: Any) -> Response:
    """A step that needs the e-mail and password again: its page, and them in the pending cookie."""
    response = render(request, template, errors={}, **context)
    sealed = portal_of(request).codec.encode_pending(email, password)
    return _with_step_cookie(request, response, PENDING_COOKIE, sealed, PENDING_SECONDS)


def _with_step_cookie(request: Request, response: Response, name: str, sealed: str, seconds: int) -> Response:
    """What the next step of a sign-in needs, encrypted, sent back only to /login, for `seconds`."""
    response.set_cookie(
        name,
        sealed,
        max_age=seconds,
        path="/login",
        httponly=True,
        samesite="lax",
        secure=secure_cookie(portal_of(request).settings, request),
    )
    return response


def _login_again(
    request: Request,
    suite: str,
    email: str,
    *,
    errors: dict[str, str] | None = None,
    failure: str | None = None,
) -> Response:
    return render(
        request,
        "login.html",
        status=400 if errors else 401,
        suite=suite,
        values={"email": email},
        errors=errors or {},
        failure=failure,
    )


@router.post("/logout")
async def logout(request: Request, form: CsrfForm) -> Response:
    """Revoke the refresh token at identity (RFC 7009), then forget the tokens."""
    refresh = session_of(request).refresh_token
    if refresh:
        await portal_of(request).upstreams.revoke(refresh)
        portal_of(request).sessions.signed_out(refresh)  # a copy of this cookie dies now (see SessionGate)
    clear_session(request)
    return redirect("/login?raison=deconnecte")


@router.get("/activate")
async def activation_page(request: Request, token: str = "") -> Response:
    """The page the activation (or password reset) e-mail links to."""
    if not 16 <= len(token) <= 128:
        return render(request, "error.html", status=400, status_code=400, message=INVALID_LINK)
    return render(request, "activate.html", token=token, errors={})


INVALID_LINK = (
    "Ce lien d'activation n'est pas valable : il a déjà servi ou a expiré. "
    "Demandez-en un nouveau à votre gestionnaire d'habilitations ou à votre CAF."
)


@router.post("/activate")
async def activate(request: Request, form: CsrfForm) -> Response:
    token = field(form, "token", 200)
    password, confirmation = form.get("password"), form.get("confirmation")
    password = password if isinstance(password, str) else ""
    errors = domain.check_activation(password, confirmation if isinstance(confirmation, str) else None)
    if errors:
        return render(request, "activate.html", status=400, token=token, errors=errors)
    try:
        result = await portal_of(request).upstreams.activate(token, password)
    except ApiError as exc:
        if exc.status == 422 and exc.reason == "password_policy":
            violations = exc.body.get("violations") or [exc.body.get("detail", "")]
            message = " ".join(texts.password_violation(str(v)) for v in violations)
            return render(request, "activate.html", status=400, token=token, errors={"password": message})
        if exc.status in (400, 422):
            return render(request, "error.html", status=400, status_code=400, message=INVALID_LINK)
        raise
    if result.get("totp_secret"):
        key = totp_key(str(result["totp_secret"]), result.get("otpauth_uri"), result.get("qr_svg"))
        return render(request, "activated.html", **key)
    return redirect("/login?raison=active")
