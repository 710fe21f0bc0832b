"""Signing in (password, then a TOTP code when identity asks for one), signing out, account activation."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cdap_portal import texts
from cdap_portal.auth import start_session
from cdap_portal.clients import ApiError, OAuthFailure
from cdap_portal.session import PENDING_COOKIE, PENDING_SECONDS
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
}
TOTP = re.compile(r"^\d{6}$")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this site only (never `//host` or `https://...`)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/login")
async def login_page(request: Request, raison: str | None = None, suite: str | None = None) -> Response:
    if session_of(request).authenticated:
        return redirect(safe_next(suite))
    return render(request, "login.html", notice=NOTICES.get(raison or ""), suite=safe_next(suite), values={})


@router.post("/login")
async def login(request: Request, form: CsrfForm) -> Response:
    """Step `password` (e-mail + password) or step `totp` (the code, the rest kept in a pending cookie)."""
    suite = safe_next(field(form, "suite", 500))
    if field(form, "step") == "totp":
        return await _totp_step(request, field(form, "totp", 10), suite)
    email, password = field(form, "email", 254), form.get("password")
    password = password if isinstance(password, str) else ""
    errors: dict[str, str] = {}
    if not email:
        errors["email"] = "Saisissez votre adresse électronique."
    if not password:
        errors["password"] = "Saisissez votre mot de passe."
    if errors:
        return _login_again(request, suite, email, errors=errors)
    try:
        tokens = await portal_of(request).upstreams.token(
            {"grant_type": "password", "username": email, "password": password}
        )
    except OAuthFailure as exc:
        if exc.description == "totp required":
            return _ask_totp(request, suite, email, password)
        return _login_again(request, suite, email, failure=_oauth_text(exc))
    return _signed_in(request, tokens, suite)


async def _totp_step(request: Request, code: str, suite: str) -> Response:
    portal = portal_of(request)
    raw = request.cookies.get(PENDING_COOKIE)
    pending = portal.codec.decode_pending(raw) if raw else None
    if pending is None:
        return redirect("/login?raison=etape")
    email, password = pending
    if not TOTP.fullmatch(code):
        return render(
            request,
            "login_totp.html",
            status=400,
            suite=suite,
            errors={"totp": "Le code comporte 6 chiffres."},
        )
    try:
        tokens = await portal.upstreams.token(
            {"grant_type": "password", "username": email, "password": password, "totp": code}
        )
    except OAuthFailure as exc:
        if exc.description == "bad credentials":
            # The password was right a moment ago: it is the code that is wrong (or already used).
            return render(
                request,
                "login_totp.html",
                status=400,
                suite=suite,
                errors={"totp": "Code incorrect ou déjà utilisé. Attendez le code suivant."},
            )
        response = _login_again(request, suite, email, failure=_oauth_text(exc))
        response.delete_cookie(PENDING_COOKIE, path="/login")
        return response
    response = _signed_in(request, tokens, suite)
    response.delete_cookie(PENDING_COOKIE, path="/login")
    return response


def _oauth_text(exc: OAuthFailure) -> str:
    if exc.error == "invalid_request" and "several accounts" in exc.description:
        return "Plusieurs comptes utilisent cette adresse. Contactez votre CAF."
    return texts.login_error(exc.description)


def _signed_in(request: Request, tokens: dict[str, Any], suite: str) -> Response:
    start_session(request, tokens)
    return redirect(suite)


def _ask_totp(request: Request, suite: str, email: str, password: str) -> Response:
    portal = portal_of(request)
    response = render(request, "login_totp.html", suite=suite, errors={})
    response.set_cookie(
        PENDING_COOKIE,
        portal.codec.encode_pending(email, password),
        max_age=PENDING_SECONDS,
        path="/login",
        httponly=True,
        samesite="lax",
        secure=secure_cookie(portal.settings, request),
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
    errors: dict[str, str] = {}
    if len(password) < 12:
        errors["password"] = "Le mot de passe doit comporter au moins 12 caractères."
    if password != confirmation:
        errors["confirmation"] = "Les deux mots de passe ne sont pas identiques."
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
        secret = str(result["totp_secret"])
        return render(
            request,
            "activated.html",
            secret=secret,
            secret_groups=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            otpauth_uri=result.get("otpauth_uri"),
        )
    return redirect("/login?raison=active")
