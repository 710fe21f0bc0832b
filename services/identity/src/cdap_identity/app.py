"""Composition root of the identity service: `uvicorn --factory cdap_identity.app:build`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI

from cdap_identity import (
    handlers,
    keystore,
    routes_clients,
    routes_grants,
    routes_organisations,
    routes_tokens,
    routes_totp,
    routes_users,
    scheduler,
)
from cdap_identity.client_cache import ClientCache, SignIns
from cdap_identity.config import Settings
from cdap_identity.standing import OwnStanding
from cdap_identity.web import PROBLEMS
from cdap_shared import asyncapi
from cdap_shared.auth import TokenVerifier
from cdap_shared.mail import Mailer, MailRelay
from cdap_shared.periodic import Periodic, running
from cdap_shared.runtime import ServiceRuntime
from cdap_shared.topics import named


def build(settings: Settings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """Wire settings, database, broker, consumers, periodic jobs and routes into one app."""
    settings = settings or Settings()
    runtime = ServiceRuntime(settings)
    runtime.consume(
        settings.access_topic,
        settings.alerts_topic,
        group_id=settings.consumer_group,
        handler=handlers.handler(settings),
        accepts=handlers.HANDLERS,
    )
    runtime.publishes(named("identity.events"), asyncapi.types_with_prefix("identity."))
    client_cache = ClientCache(lambda: runtime.pool, settings.client_cache_seconds)
    client_cache.watch(runtime.sessions)

    async def reload_keys() -> None:
        """Pick up a rotation made by another replica (or `cdap identity rotate-keys`)."""
        app.state.key_ring = ring = await keystore.load_ring(runtime.sessions, settings.access_token_seconds)
        own: TokenVerifier = app.state.token_verifier
        if own.jwks_url is None:  # identity's own verifier, fed from the ring (not a test's)
            own.use_keys(ring.jwks(datetime.now(UTC)))

    jobs = [
        scheduler.periodic(runtime.sessions, settings),
        Periodic("key-reload", reload_keys, settings.key_reload_seconds),
        MailRelay(runtime.sessions, Mailer(settings.smtp_url)).periodic(),
    ]

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
        async with runtime.lifespan(app), running(*jobs):
            yield

    app = runtime.create_app(
        title="CDAP identity",
        lifespan=lifespan,
        routers=[
            routes_tokens.router,
            routes_totp.router,
            routes_organisations.router,
            routes_users.router,
            routes_grants.router,
            routes_clients.router,
        ],
        problems=PROBLEMS,
        public_paths=(
            "/v1/token",
            "/v1/activations",
            "/v1/revoke",
            "/v1/totp/enrolment",
            "/v1/totp/enrolment/confirm",
            "/v1/introspect",
        ),
    )
    app.state.settings = settings
    app.state.token_verifier = verifier
    app.state.standing = OwnStanding(runtime)
    app.state.client_cache = client_cache
    app.state.sign_ins = SignIns(lambda: runtime.pool, settings.access_token_seconds)
    return app
