"""Composition root of the portal: `uvicorn --factory cdap_portal.app:build`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from cdap_portal import (
    routes_admin,
    routes_audit,
    routes_auth,
    routes_dossiers,
    routes_home,
    routes_instruction,
    routes_partner,
    routes_requests,
)
from cdap_portal.auth import Refresher, SessionGate
from cdap_portal.clients import Upstreams
from cdap_portal.config import Settings
from cdap_portal.policy import DossiersPolicy
from cdap_portal.session import SessionCodec
from cdap_portal.web import HERE, Portal, dsfr_files, install, make_templates
from cdap_shared.http import create_app
from cdap_shared.telemetry import configure_logging, configure_tracing


def build(settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """Wire settings, session keys, upstream clients, policy, templates and routes into one app.

    `transport` replaces the network under the upstream client (tests use `httpx.MockTransport`).
    """
    settings = settings or Settings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otlp_endpoint)
    dsfr_dist, dsfr_version = dsfr_files(settings)
    secret = settings.portal_secret.get_secret_value().encode() if settings.portal_secret else None
    portal = Portal(
        settings=settings,
        codec=SessionCodec(secret),
        upstreams=Upstreams(settings, transport),
        policy=DossiersPolicy(settings.policy_cache_seconds),
        templates=make_templates(dsfr_version, settings.trace_viewer_url),
        refresher=Refresher(),
        sessions=SessionGate(settings.session_check_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await portal.upstreams.aclose()

    async def identity_answers() -> None:
        # Without identity nobody can sign in or refresh: the portal is not ready.
        response = await portal.upstreams.http.get(f"{portal.upstreams.urls['identity']}/health", timeout=2.0)
        response.raise_for_status()

    app = create_app(
        title="CDAP portail",
        lifespan=lifespan,
        ready_checks={"identity": identity_answers},
        routers=[
            routes_home.router,
            routes_auth.router,
            routes_dossiers.router,
            routes_requests.router,
            routes_instruction.router,
            routes_audit.router,
            routes_admin.router,
            routes_partner.router,
        ],
        trusted_proxies=settings.trusted_proxies,
    )
    app.state.portal = portal
    app.state.settings = settings
    app.mount("/static/dsfr", StaticFiles(directory=dsfr_dist), name="dsfr")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    install(app)
    return app
