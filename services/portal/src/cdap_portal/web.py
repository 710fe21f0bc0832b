"""What every page needs: the portal's state, rendering, the session middleware, CSRF, error pages."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from cdap_portal import texts
from cdap_portal.clients import ApiError, Upstreams
from cdap_portal.config import Settings
from cdap_portal.outcomes import Outcomes
from cdap_portal.policy import DossiersPolicy
from cdap_portal.session import COOKIE, CSRF_FIELD, Session, SessionCodec

HERE = Path(__file__).resolve().parent
# Where `make setup` installs the npm packages of the portal (package.json beside src/).
NODE_MODULES = HERE.parents[1] / "node_modules"
# No cookie for these: they are not pages and must not start sessions.
NO_SESSION_PREFIXES = ("/static/", "/health", "/ready", "/metrics")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The activation link carries its token in the query string: never send it on as a Referer.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}


class LoginRequired(Exception):
    """No signed-in session: go to the login page, then come back."""


class SessionExpired(Exception):
    """The session cannot be refreshed (or is too old): sign out, say why."""


class AccountRefused(SessionExpired):
    """An API refuses the account itself (`reason`: suspended, password reset required...): sign out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The login page's notice (`raison`) after a sign-out an API's refusal caused.
REFUSAL_NOTICES = {"suspended": "suspendu", "password_reset_required": "reinitialisation"}


class NotAllowed(Exception):
    """The signed-in person's role does not open this page."""


class CsrfRefused(Exception):
    """A POST without a valid CSRF token: refused before anything happens."""


@dataclass
class Portal:
    """The portal's long-lived parts, on `app.state.portal`."""

    settings: Settings
    codec: SessionCodec
    upstreams: Upstreams
    policy: DossiersPolicy
    templates: Jinja2Templates
    refresher: Any  # auth.Refresher (typed there; kept loose to avoid an import cycle)
    sessions: Any  # auth.SessionGate (idem)
    outcomes: Outcomes = dataclasses.field(default_factory=Outcomes)


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


def replace_session(request: Request, session: Session) -> None:
    """Use `session` from now on; the middleware writes it into the cookie of the response."""
    request.state.session = session
    request.state.session_changed = True


def clear_session(request: Request) -> None:
    """Forget the tokens; a fresh anonymous session (new id: old CSRF tokens die) replaces them."""
    replace_session(request, Session())


def dsfr_files(settings: Settings) -> tuple[Path, str]:
    """The design system's `dist/` folder and its version; a clear error when it was not installed."""
    dist = settings.dsfr_dir or NODE_MODULES / "@gouvfr" / "dsfr" / "dist"
    manifest = dist.parent / "package.json"
    if not (dist / "dsfr.min.css").is_file() or not manifest.is_file():
        raise RuntimeError(f"the State's design system is missing in {dist}: run `make setup` (npm ci)")
    return dist, str(json.loads(manifest.read_text())["version"])


def make_templates(dsfr_version: str = "", trace_viewer_url: str | None = None) -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.globals.update(
        texts=texts,
        label=texts.label,
        dsfr_version=dsfr_version,
        trace_url=partial(trace_url, trace_viewer_url),
    )
    env.filters["date_fr"] = texts.date_fr
    env.filters["siret"] = texts.siret_fr
    env.filters["euros"] = texts.euros
    env.filters["day_and_time"] = texts.day_and_time
    env.trim_blocks = True
    env.lstrip_blocks = True
    return templates


def trace_url(viewer_url: str | None, trace_id: str | None) -> str | None:
    """The trace viewer's page of `trace_id` (Jaeger's `/trace/<id>`), if a viewer is configured."""
    if not viewer_url or not trace_id:
        return None
    return f"{viewer_url.rstrip('/')}/trace/{trace_id}"


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """A page, with what the layout needs: who is signed in, the CSRF token, the navigation."""
    portal = portal_of(request)
    viewer = getattr(request.state, "viewer", None)
    base = {
        "viewer": viewer,
        "csrf_field": CSRF_FIELD,
        "csrf": portal.codec.csrf_token(session_of(request).sid),
        "nav": navigation(viewer),
        "path": request.url.path,
    }
    return portal.templates.TemplateResponse(request, template, base | context, status_code=status)


def navigation(viewer: Any) -> list[tuple[str, str]]:
    """The menu: one entry per area the person's roles open."""
    if viewer is None:
        return []
    items = [("/", "Accueil")]
    if viewer.has("partner_user"):
        items.append(("/dossiers", "Consulter un dossier"))
    if viewer.has("partner_admin"):
        items.append(("/demandes", "Demandes d'habilitation"))
        items.append(("/habilitations", "Habilitations de mon organisme"))
    if viewer.has("caf_instructor", "caf_manager"):
        items.append(("/instruction", "File d'instruction"))
    if viewer.has("caf_admin"):
        items += [("/administration/organismes", "Organismes"), ("/administration/comptes", "Comptes CAF")]
    if viewer.has("auditor"):
        items += [
            ("/audit", "Journal d'audit"),
            ("/audit/consultations", "Consultations d'un dossier"),
            ("/audit/alertes", "Alertes"),
            ("/audit/point-de-controle", "Point de contrôle"),
        ]
    return items


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def leave_for(request: Request, url: str) -> Response:
    """Send the browser to `url`: a redirect, or for an htmx request (which would follow a redirect and
    swap the login page into a table) an `HX-Redirect` that makes htmx load the whole page."""
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return redirect(url)


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


async def csrf_form(request: Request) -> FormData:
    """The submitted form, once its CSRF token is checked against the session (else 403, nothing done)."""
    portal = portal_of(request)
    form = await request.form(max_files=10, max_fields=50)
    if not portal.codec.csrf_ok(session_of(request).sid, form.get(CSRF_FIELD)):
        raise CsrfRefused
    return form


CsrfForm = Annotated[FormData, Depends(csrf_form)]


def field(form: FormData, name: str, max_length: int = 2000) -> str:
    """A text field, stripped and bounded (a file where text was expected counts as empty)."""
    value = form.get(name)
    return value.strip()[:max_length] if isinstance(value, str) else ""


def confirmation(
    request: Request, form: FormData, title: str, effect: str, back: str = "/"
) -> Response | None:
    """The confirmation page for this POST (what it will do, Confirm / Cancel), unless the POST comes from
    that page (`confirme=oui`). The form's fields travel through the page unchanged; `retour`, a local
    path, is where Cancel leads (else `back`)."""
    if field(form, "confirme") == "oui":
        return None
    kept = {k: v for k, v in form.multi_items() if isinstance(v, str) and k not in (CSRF_FIELD, "confirme")}
    retour = field(form, "retour", 300)
    return render(
        request,
        "confirm.html",
        title=title,
        effect=effect,
        action=request.url.path,
        kept=kept,
        back=retour if retour.startswith("/") and not retour.startswith("//") else back,
    )


async def confirmed(
    request: Request,
    form: FormData,
    title: str,
    effect: str,
    act: Callable[[], Awaitable[Response]],
    back: str = "/",
) -> Response:
    """Every action that changes something: the confirmation page stating `effect` first; `act` (the call
    to the service, then the page to go to) only for the POST from that page."""
    return confirmation(request, form, title, effect, back) or await act()


# ---------------------------------------------------------------------------- middleware and errors


def install(app: FastAPI) -> None:
    """Session cookie handling, security headers, and HTML error pages in place of problem+json."""

    @app.middleware("http")
    async def session_cookie(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        portal = portal_of(request)
        if request.url.path.startswith(NO_SESSION_PREFIXES):
            return await call_next(request)
        raw = request.cookies.get(COOKIE)
        session = portal.codec.decode(raw) if raw else None
        request.state.session = session or Session()
        request.state.session_changed = session is None
        response = await call_next(request)
        if request.state.session_changed:
            response.set_cookie(
                COOKIE,
                portal.codec.encode(request.state.session),
                httponly=True,
                samesite="lax",
                secure=secure_cookie(portal.settings, request),
                path="/",
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        # Pages show personal data: no shared or browser cache may keep them.
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def on_login_required(request: Request, exc: Exception) -> Response:
        return leave_for(request, f"/login?suite={quote(request.url.path)}")

    async def on_expired(request: Request, exc: Exception) -> Response:
        clear_session(request)
        refused = REFUSAL_NOTICES.get(exc.reason) if isinstance(exc, AccountRefused) else None
        return leave_for(request, f"/login?raison={refused or 'expiree'}")

    async def on_not_allowed(request: Request, exc: Exception) -> Response:
        return error_page(request, 403, "Cette page n'est pas accessible avec votre rôle.")

    async def on_csrf(request: Request, exc: Exception) -> Response:
        return error_page(
            request,
            403,
            "Le formulaire a expiré ou ne provient pas de ce site. Rechargez la page puis recommencez.",
        )

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status == 503:
            return error_page(request, 503, "Un service est momentanément indisponible. Réessayez plus tard.")
        if exc.status == 404:
            return error_page(
                request, 404, "Ce que vous cherchez n'existe pas ou ne vous est pas accessible."
            )
        if exc.status == 403:
            return error_page(request, 403, "Vous n'avez pas accès à cette information.")
        if exc.status in (400, 422):
            # The service refused what the page passed on from the address (e.g. a made-up `page` cursor):
            # the visitor's input, not a fault of the service (found by schemathesis; it was a 502).
            return error_page(request, 400, "Les paramètres de la page sont invalides.")
        return error_page(request, 502, "Un service a répondu de façon inattendue. Réessayez plus tard.")

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_page(request, 404, "Cette page n'existe pas.")
        if exc.status_code == 405:
            return error_page(request, 405, "Cette adresse ne s'utilise pas ainsi.")
        return error_page(request, exc.status_code, "La requête n'a pas pu aboutir.")

    async def on_validation(request: Request, exc: Exception) -> Response:
        return error_page(request, 400, "Les paramètres de la page sont invalides.")

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error_page(request, 500, "Une erreur inattendue est survenue ; elle a été journalisée.")

    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(SessionExpired, on_expired)
    app.add_exception_handler(NotAllowed, on_not_allowed)
    app.add_exception_handler(CsrfRefused, on_csrf)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)


def secure_cookie(settings: Settings, request: Request) -> bool:
    return settings.cookie_secure if settings.cookie_secure is not None else is_https(request)


def error_page(request: Request, status: int, message: str) -> Response:
    if not hasattr(request.state, "session"):  # an error before the middleware ran (static files)
        return Response(message, status_code=status, media_type="text/plain; charset=utf-8")
    return render(request, "error.html", status=status, message=message, status_code=status)
