"""Composition root of the access-requests service: `uvicorn --factory cdap_access.app:build`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cdap_access import asyncapi, projections
from cdap_access.config import Settings
from cdap_access.domain import Refused
from cdap_access.profiles import load_profiles
from cdap_access.requests import Context
from cdap_access.routes import router
from cdap_access.scheduler import Scheduler
from cdap_shared import asyncapi as shared_asyncapi
from cdap_shared import standing
from cdap_shared.auth import TokenVerifier
from cdap_shared.envelope import utcnow
from cdap_shared.http import create_app
from cdap_shared.mail import Mailer, MailRelay
from cdap_shared.problems import Problem, problem_response
from cdap_shared.runtime import ServiceRuntime

TITLES = {403: "Forbidden", 409: "Conflict", 422: "Invalid request"}


async def on_refused(request: Request, exc: Exception) -> JSONResponse:
    """A workflow refusal is a problem+json with the domain's machine-readable `reason`."""
    assert isinstance(exc, Refused)
    problem = Problem(exc.status, TITLES.get(exc.status, "Refused"), exc.detail, reason=exc.reason)
    return problem_response(problem, request)


def build(settings: Settings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """Wire settings, profiles, database, broker, consumer, scheduler, mail and routes into one app."""
    settings = settings or Settings()
    catalogue = load_profiles(settings.profiles_path)  # a bad file stops the service here, with its reason
    runtime = ServiceRuntime(settings)
    runtime.consume(
        settings.identity_topic, group_id=settings.consumer_group, handler=projections.handler(settings)
    )
    ctx = Context(settings, catalogue)
    scheduler = Scheduler(runtime.sessions, ctx, settings.scheduler_interval_seconds)
    mail_relay = MailRelay(
        runtime.sessions, Mailer(settings.smtp_url), interval=settings.mail_poll_seconds or 1.0
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with runtime.lifespan(app):
            tasks = []
            if settings.scheduler_interval_seconds > 0:
                tasks.append(asyncio.create_task(scheduler.run(), name="scheduler"))
            if settings.mail_poll_seconds > 0:
                tasks.append(asyncio.create_task(mail_relay.run(), name="mail-relay"))
            try:
                yield
            finally:
                scheduler.stop()
                mail_relay.stop()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)

    app = create_app(
        title="CDAP access requests",
        lifespan=lifespan,
        routers=[router],
        ready_checks=runtime.ready_checks,
        trusted_proxies=settings.trusted_proxies,
        token_url=settings.token_url,
    )
    app.add_exception_handler(Refused, on_refused)
    shared_asyncapi.install(app, asyncapi.document(settings))

    app.state.settings = settings
    app.state.runtime = runtime
    app.state.sessions = runtime.sessions
    app.state.ctx = ctx
    app.state.clock = utcnow
    app.state.standing = standing.ProjectedStanding(runtime)
    app.state.token_verifier = verifier or TokenVerifier(
        settings.jwks_url, settings.jwt_audience, settings.jwt_issuer
    )
    return app
