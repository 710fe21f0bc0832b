"""Composition root of the identity service: `uvicorn --factory cdap_identity.app:build`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import FastAPI

from cdap_identity import enrolment, habilitations, keystore, tokens
from cdap_identity.api_accounts import router as accounts_router
from cdap_identity.api_grants import router as grants_router
from cdap_identity.api_tokens import router as tokens_router
from cdap_identity.api_totp import router as totp_router
from cdap_identity.client_cache import ClientCache, SignIns
from cdap_identity.config import Settings
from cdap_identity.consumers import IdentityHandlers
from cdap_identity.standing import OwnStanding
from cdap_shared import asyncapi
from cdap_shared.auth import TokenVerifier
from cdap_shared.clock import civil_today
from cdap_shared.http import create_app
from cdap_shared.mail import Mailer, MailRelay
from cdap_shared.runtime import ServiceRuntime
from cdap_shared.topics import named

log = structlog.get_logger(__name__)


def build(settings: Settings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """Wire settings, database, broker, consumers, background jobs and routes into one app."""
    settings = settings or Settings()
    runtime = ServiceRuntime(settings)
    handlers = IdentityHandlers(settings.portal_url, settings.activation_hours)
    runtime.consume(
        settings.access_topic,
        settings.alerts_topic,
        group_id=settings.consumer_group,
        handler=handlers.apply,
        accepts=("access.request.approved", "access.grant.revocation_requested", "audit.alert.raised"),
    )
    runtime.publishes(named("identity.events"), asyncapi.types_with_prefix("identity."))
    mail_relay = MailRelay(runtime.sessions, Mailer(settings.smtp_url))
    client_cache = ClientCache(lambda: runtime.pool, settings.client_cache_seconds)
    client_cache.watch(runtime.sessions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.key_ring = await keystore.load_ring(runtime.sessions, settings.access_token_seconds)
        if app.state.token_verifier is None:
            # Identity verifies its own tokens from its ring, without an HTTP round trip to itself.
            app.state.token_verifier = TokenVerifier(
                None,
                settings.jwt_audience,
                settings.jwt_issuer,
                keys=app.state.key_ring.jwks(datetime.now(UTC)),
            )
        tasks = [
            asyncio.create_task(mail_relay.run(), name="mail-relay"),
            asyncio.create_task(
                _every(settings.grant_sweep_seconds, lambda: _sweep(runtime)), name="grant-sweep"
            ),
            asyncio.create_task(
                _every(settings.key_reload_seconds, lambda: _reload_keys(app, settings)), name="keys"
            ),
        ]
        async with runtime.lifespan(app):
            yield
        mail_relay.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app = create_app(
        title="CDAP identity",
        lifespan=lifespan,
        routers=[tokens_router, totp_router, accounts_router, grants_router],
        ready_checks=runtime.ready_checks,
        public_paths=(
            "/v1/token",
            "/v1/activations",
            "/v1/revoke",
            "/v1/totp/enrolment",
            "/v1/totp/enrolment/confirm",
            "/v1/introspect",
        ),
        trusted_proxies=settings.trusted_proxies,
        token_url=settings.token_url,
    )
    asyncapi.install(app, runtime.broker, "CDAP identity")
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.sessions = runtime.sessions
    app.state.token_verifier = verifier
    app.state.standing = OwnStanding(runtime)
    app.state.client_cache = client_cache
    app.state.sign_ins = SignIns(lambda: runtime.pool, settings.access_token_seconds)
    app.state.mail_relay = mail_relay
    return app


async def _every(seconds: float, job: Any) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception as exc:  # an outage: the next round tries again
            log.warning("scheduled job failed", error=type(exc).__name__)


async def _sweep(runtime: ServiceRuntime) -> None:
    async with runtime.sessions() as session, session.begin():
        expired = await habilitations.expire_due(session, civil_today())
        await tokens.forget_unknown_logins(session, datetime.now(UTC))
        await enrolment.forget_expired(session, datetime.now(UTC))
    if expired:
        log.info("grants expired", count=expired)


async def _reload_keys(app: FastAPI, settings: Settings) -> None:
    """Pick up a rotation made by another replica (or `cdap identity rotate-keys`)."""
    ring = await keystore.load_ring(app.state.runtime.sessions, settings.access_token_seconds)
    app.state.key_ring = ring
    verifier = app.state.token_verifier
    if verifier is not None and verifier.jwks_url is None:
        verifier.use_keys(ring.jwks(datetime.now(UTC)))
