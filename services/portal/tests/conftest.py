"""The portal against fake upstreams (`httpx.MockTransport`): every call the portal makes is recorded,
so a test can assert that a refused form reached no service at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest

from cdap_portal.app import build
from cdap_portal.config import Settings
from cdap_shared.envelope import new_event_id

Handler = Callable[[httpx.Request], httpx.Response]
# What the dossiers service serves at GET /v1/dossiers/policy (three of its profiles), for the lookup form.
POLICY_PATH = "/v1/dossiers/policy"
POLICY: dict[str, Any] = {
    "version": "test-1",
    "profiles": {
        "T1": {
            "label": "Travailleurs sociaux",
            "sections": ["identite", "adresse", "foyer", "ressources"],
            "motifs": ["accompagnement_social", "instruction_aide", "verification_droits"],
            "scope": "department",
            "opposition": True,
            "searchable": True,
        },
        "T2": {
            "label": "Bailleurs sociaux",
            "sections": ["identite", "adresse", "logement"],
            "motifs": ["gestion_aide_logement"],
            "scope": "landlord",
            "opposition": True,
            "searchable": True,
        },
        "T3": {
            "label": "Organismes d'aide aux vacances",
            "sections": ["identite", "foyer", "quotient_familial"],
            "motifs": ["tarification_vacances"],
            "scope": "match",
            "opposition": True,
            "searchable": False,
        },
    },
}
FRESH = {"as_of": "2026-11-30T13:05:00Z", "caught_up": True, "waiting": 0, "stalled": False}
HOSTS = {
    "identity.test": "identity",
    "access.test": "access",
    "dossiers.test": "dossiers",
    "audit.test": "audit",
}


def make_token(ttl: int = 300, **claims: Any) -> str:
    """An access token shaped like identity's (the portal reads its claims, it does not verify it)."""
    now = int(time.time())
    body = {"sub": "user-1", "roles": ["partner_user"], "grants": [], "iat": now, "exp": now + ttl}
    body |= {"aud": "cdap", "iss": "cdap-identity", "jti": new_event_id(), **claims}
    return jwt.encode(body, "not-verified-by-the-portal-at-least-32-bytes", algorithm="HS256")


@dataclass
class Call:
    service: str
    method: str
    path: str
    request: httpx.Request

    @property
    def bearer(self) -> str | None:
        value = self.request.headers.get("authorization", "")
        return value.removeprefix("Bearer ") or None

    def form(self) -> dict[str, str]:
        return dict(httpx.QueryParams(self.request.content.decode()))


@dataclass
class Fakes:
    """Routes `(service, method, path regex)` to handlers; records every call."""

    routes: list[tuple[str, str, re.Pattern[str], Handler]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    # Dossiers' policy, served to the portal's form and not counted in `calls` (which are the actions a
    # test checks); None: dossiers does not answer it. `policy_reads` counts the reads.
    policy: dict[str, Any] | None = field(default_factory=lambda: POLICY)
    policy_reads: list[httpx.Request] = field(default_factory=list)
    # The audit's `GET /v1/freshness`, served to every auditor's page and not counted in `calls` either;
    # None: the audit does not answer it.
    freshness: dict[str, Any] | None = field(default_factory=lambda: dict(FRESH))

    def on(self, service: str, method: str, path: str, handler: Handler | httpx.Response) -> None:
        fn: Handler = handler if callable(handler) else (lambda _r, resp=handler: resp)  # type: ignore[misc]
        self.routes.insert(0, (service, method, re.compile(f"^{path}$"), fn))

    def handle(self, request: httpx.Request) -> httpx.Response:
        service = HOSTS[request.url.host]
        if (service, request.url.path) == ("dossiers", POLICY_PATH) and self.policy is not None:
            self.policy_reads.append(request)
            return httpx.Response(200, json=self.policy)
        if (service, request.url.path) == ("audit", "/v1/freshness") and self.freshness is not None:
            return httpx.Response(200, json=self.freshness)
        self.calls.append(Call(service, request.method, request.url.path, request))
        for svc, method, pattern, fn in self.routes:
            if svc == service and method == request.method and pattern.match(request.url.path):
                return fn(request)
        return httpx.Response(404, json={"title": "no fake for this call", "status": 404})

    def made(self, service: str | None = None) -> list[Call]:
        return [c for c in self.calls if service is None or c.service == service]


def tokens(
    claims: dict[str, Any] | None = None, ttl: int = 300, refresh: str = "refresh-1"
) -> dict[str, Any]:
    return {
        "access_token": make_token(ttl, **(claims or {})),
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh,
    }


T1_USER = {
    "sub": "user-t1",
    "email": "claire@example.fr",
    "org": "org-1",
    "roles": ["partner_user"],
    "grants": [{"id": "g-1", "profile": "T1", "department": "76"}],
}
T3_USER = {**T1_USER, "sub": "user-t3", "grants": [{"id": "g-3", "profile": "T3", "department": "76"}]}
PARTNER_ADMIN = {"sub": "padmin", "email": "admin@example.fr", "org": "org-1", "roles": ["partner_admin"]}
INSTRUCTOR = {"sub": "instr", "email": "i@caf.fr", "roles": ["caf_instructor"], "department": "76"}
AUDITOR = {"sub": "aud", "email": "a@caf.fr", "roles": ["auditor"], "department": "76"}
# A new access request's form, filled in but for its end date.
NEW_REQUEST = {
    "family_name": "Petit",
    "given_name": "Jules",
    "email": "jules@bailleur.fr",
    "job_title": "Chargé de gestion locative",
    "profile": "T2",
    "department": "76",
    "justification": "Suivi des aides au logement",
}


@dataclass
class PortalClient:
    client: httpx.AsyncClient
    fakes: Fakes
    settings: Settings

    async def csrf(self, path: str = "/login") -> str:
        page = await self.client.get(path)
        return csrf_of(page.text)

    async def login(self, claims: dict[str, Any], ttl: int = 300) -> None:
        self.fakes.on("identity", "POST", "/v1/token", httpx.Response(200, json=tokens(claims, ttl)))
        token = await self.csrf()
        r = await self.client.post(
            "/login",
            data={"csrf_token": token, "step": "password", "email": "x@example.fr", "password": "pw"},
        )
        assert r.status_code == 303, r.text
        self.fakes.calls.clear()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def portal_settings(**overrides: Any) -> Settings:
    return Settings(
        identity_url="http://identity.test",
        access_requests_url="http://access.test",
        dossiers_url="http://dossiers.test",
        audit_url="http://audit.test",
        **overrides,
    )


@pytest.fixture
def make_portal() -> Callable[..., PortalClient]:
    opened: list[httpx.AsyncClient] = []

    def make(base_url: str = "http://portal.test", **overrides: Any) -> PortalClient:
        fakes = Fakes()
        settings = portal_settings(**overrides)
        app = build(settings, transport=httpx.MockTransport(fakes.handle))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
        opened.append(client)
        return PortalClient(client, fakes, settings)

    return make


@pytest.fixture
async def portal(make_portal: Callable[..., PortalClient]) -> AsyncIterator[PortalClient]:
    client = make_portal()
    yield client
    await client.client.aclose()


# --------------------------------------------------------------------------- browser tests (Playwright)

CHROMIUM = "/usr/bin/chromium"
# We run as root (no sandbox) on a machine without a network beyond loopback: without these flags
# Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop running in the main thread from its
    first use to the end of the session, and pytest-asyncio cannot run a test while one runs."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium (never a browser downloaded by `playwright install`), headless."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}
