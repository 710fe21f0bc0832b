"""Who is signed in, keeping their access token fresh, and calling the APIs on their behalf.

Access tokens live 5 minutes; the refresh token (7 days, rotated at each use) renews them without the
person noticing. Identity treats a refresh token presented twice as stolen and revokes its whole family,
so two requests of one browser that both find the token stale must not both spend it: within this
process, concurrent refreshes of one refresh token share a single call and its answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie

from cdap_portal.clients import ApiError, OAuthFailure, Upstreams, checked, json_of
from cdap_portal.session import COOKIE, Session, session_expired
from cdap_portal.web import (
    AccountRefused,
    LoginRequired,
    NotAllowed,
    SessionExpired,
    portal_of,
    replace_session,
    session_of,
)
from cdap_shared import standing

SHARE_SECONDS = 30.0  # how long a refresh's answer is reused for the same (now spent) refresh token


class Refresher:
    """Refreshes tokens; concurrent refreshes of one refresh token make one call to identity."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._answers: dict[str, tuple[float, dict[str, Any]]] = {}

    async def refresh(self, upstreams: Upstreams, refresh_token: str) -> dict[str, Any]:
        key = _digest(refresh_token)
        self._prune()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            shared = self._answers.get(key)
            if shared is not None:
                return shared[1]
            body = await upstreams.token({"grant_type": "refresh_token", "refresh_token": refresh_token})
            self._answers[key] = (time.monotonic(), body)
            return body

    def _prune(self) -> None:
        limit = time.monotonic() - SHARE_SECONDS
        for key in [k for k, (at, _) in self._answers.items() if at < limit]:
            del self._answers[key]
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]


class SessionGate:
    """Whether a sign-in session is still alive, so that a copied cookie dies at its owner's sign-out.

    The portal keeps no database: identity knows. Sign-out revokes the session's refresh-token family
    there (RFC 7009), and `alive` asks identity (RFC 7662 introspection of the session's refresh token)
    when its last answer is over `recheck_seconds` old. A sign-out through this process is known at once;
    through another replica, within `recheck_seconds`. Sessions just issued or refreshed are alive."""

    def __init__(self, recheck_seconds: float) -> None:
        self.recheck_seconds = recheck_seconds
        self._answers: dict[str, tuple[float, bool]] = {}

    async def alive(self, upstreams: Upstreams, refresh_token: str) -> bool:
        key = _digest(refresh_token)
        known = self._answers.get(key)
        if known is not None and (not known[1] or time.monotonic() - known[0] < self.recheck_seconds):
            return known[1]  # a revoked family never comes back
        try:
            active = await upstreams.introspect(refresh_token)
        except ApiError:
            if known is None:
                raise
            # Identity unreachable: the last answer holds, until the access token needs a refresh.
            return known[1]
        self._remember(key, active)
        return active

    def issued(self, refresh_token: str) -> None:
        """Identity just issued this token: its session is alive."""
        self._remember(_digest(refresh_token), True)

    def signed_out(self, refresh_token: str) -> None:
        self._remember(_digest(refresh_token), False)

    def _remember(self, key: str, alive: bool) -> None:
        if len(self._answers) >= 10_000:
            self._answers.clear()  # bounded: identity is asked again, and knows
        self._answers[key] = (time.monotonic(), alive)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Viewer:
    """The signed-in person, as their access token describes them."""

    sub: str
    email: str
    roles: frozenset[str]
    org: str | None
    department: str | None
    grants: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Viewer:
        grants = tuple(
            {"id": str(g.get("id")), "profile": str(g.get("profile")), "department": str(g.get("department"))}
            for g in claims.get("grants") or []
            if isinstance(g, dict)
        )
        return cls(
            sub=str(claims.get("sub", "")),
            email=str(claims.get("email", "")),
            roles=frozenset(str(r) for r in claims.get("roles") or []),
            org=claims.get("org"),
            department=claims.get("department"),
            grants=grants,
        )


def start_session(request: Request, tokens: dict[str, Any]) -> None:
    """Signed in: a new session (new id, so any CSRF token issued before no longer works)."""
    if tokens.get("refresh_token"):
        portal_of(request).sessions.issued(str(tokens["refresh_token"]))
    replace_session(
        request,
        Session(
            access_token=str(tokens["access_token"]),
            refresh_token=tokens.get("refresh_token"),
            started_at=time.time(),
        ),
    )


async def refresh_now(request: Request) -> Session:
    """Trade the refresh token for new tokens; an impossible refresh ends the session."""
    portal = portal_of(request)
    session = session_of(request)
    if not session.refresh_token:
        raise SessionExpired
    try:
        tokens = await portal.refresher.refresh(portal.upstreams, session.refresh_token)
    except OAuthFailure as exc:
        raise SessionExpired from exc
    if tokens.get("refresh_token"):
        portal.sessions.issued(str(tokens["refresh_token"]))
    renewed = Session(
        sid=session.sid,  # same session: the forms on the person's open pages keep working
        access_token=str(tokens["access_token"]),
        refresh_token=tokens.get("refresh_token", session.refresh_token),
        started_at=session.started_at,
    )
    replace_session(request, renewed)
    return renewed


async def fresh_session(request: Request) -> Session:
    """The signed-in session with an access token good for at least the refresh margin."""
    portal = portal_of(request)
    session = session_of(request)
    if not session.authenticated:
        raise LoginRequired
    if session_expired(session, portal.settings.session_hours * 3600):
        raise SessionExpired
    if session.refresh_token and not await portal.sessions.alive(portal.upstreams, session.refresh_token):
        raise SessionExpired  # signed out (perhaps from another browser holding a copy of this cookie)
    if session.expires_at() - time.time() < portal.settings.refresh_margin_seconds:
        session = await refresh_now(request)
    return session


# Declares the pages that need a signed-in session in the OpenAPI document; the session itself is read
# (and checked) by the SessionGate middleware, so a missing cookie is not an error here.
SessionCookie = Annotated[
    str | None,
    Depends(
        APIKeyCookie(
            name=COOKIE, scheme_name="session", description="The signed-in session.", auto_error=False
        )
    ),
]


async def current_viewer(request: Request, _: SessionCookie) -> Viewer:
    """FastAPI dependency: the signed-in person (else a redirect to the login page)."""
    session = await fresh_session(request)
    viewer = Viewer.from_claims(session.claims())
    request.state.viewer = viewer
    return viewer


CurrentViewer = Annotated[Viewer, Depends(current_viewer)]


def require(*roles: str) -> Any:
    """Dependency factory: the signed-in person, if they hold one of `roles` (else a 403 page)."""

    async def check(viewer: CurrentViewer) -> Viewer:
        if not viewer.has(*roles):
            raise NotAllowed
        return viewer

    return Depends(check)


class Api:
    """The APIs, called as the signed-in person: a fresh token, and one refresh-and-retry on a 401."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.upstreams = portal_of(request).upstreams

    async def call(self, service: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        session = await fresh_session(self.request)
        response = await self.upstreams.send(service, method, path, token=session.access_token, **kwargs)
        if response.status_code == 401:
            # The token was refused before anything happened (e.g. identity rotated its keys): retry once.
            session = await refresh_now(self.request)
            response = await self.upstreams.send(service, method, path, token=session.access_token, **kwargs)
            if response.status_code == 401:
                raise SessionExpired
        reason = json_of(response).get("reason") if response.status_code == 403 else None
        if reason in standing.REASONS:
            # The account is suspended, must reset its password...: identity revoked its refresh tokens,
            # and this session ends here rather than at the access token's expiry.
            raise AccountRefused(str(reason))
        return response

    async def json(self, service: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON answer of a 2xx; `ApiError` otherwise."""
        return checked(service, await self.call(service, method, path, **kwargs))


async def api(request: Request, _: SessionCookie) -> Api:
    return Api(request)


UserApi = Annotated[Api, Depends(api)]

__all__ = ["Api", "ApiError", "CurrentViewer", "UserApi", "Viewer", "require"]
