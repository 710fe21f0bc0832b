"""Composition root of the access-requests service: `uvicorn --factory cdap_access.app:build`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from cdap_access import (
    handlers,
    routes_documents,
    routes_grants,
    routes_profiles,
    routes_requests,
    scheduler,
)
from cdap_access.config import Context, Settings
from cdap_access.profiles import load_profiles
from cdap_access.web import PROBLEMS
from cdap_shared import asyncapi, standing
from cdap_shared.auth import TokenVerifier
from cdap_shared.mail import Mailer, MailRelay
from cdap_shared.periodic import Periodic, running
from cdap_shared.runtime import ServiceRuntime


def build(settings: Settings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """Wire settings, profiles, database, broker, consumer, scheduler, mail and routes into one app."""
    settings = settings or Settings()
    catalogue = load_profiles(settings.profiles_path)  # a bad file stops the service here, with its reason
    runtime = ServiceRuntime(settings)
    runtime.consume(
        settings.identity_topic,
        group_id=settings.consumer_group,
        handler=handlers.handler(settings),
        accepts=(*handlers.HANDLERS, *standing.EVENT_TYPES),
    )
    runtime.publishes(settings.access_topic, asyncapi.types_with_prefix("access."))
    ctx = Context(settings, catalogue)
    jobs: list[Periodic] = []
    if settings.scheduler_interval_seconds > 0:
        jobs.append(scheduler.periodic(runtime.sessions, ctx))
    if settings.mail_poll_seconds > 0:
        jobs.append(
            MailRelay(runtime.sessions, Mailer(settings.smtp_url), settings.mail_poll_seconds).periodic()
        )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with runtime.lifespan(app), running(*jobs):
            yield

    app = runtime.create_app(
        title="CDAP access requests",
        lifespan=lifespan,
        routers=[
            routes_requests.router,
            routes_documents.router,
            routes_grants.router,
            routes_profiles.router,
        ],
        problems=PROBLEMS,
    )
    app.state.ctx = ctx
    app.state.standing = standing.ProjectedStanding(runtime)
    app.state.token_verifier = verifier or runtime.token_verifier()
    return app
