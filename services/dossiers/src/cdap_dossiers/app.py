"""Composition root of the dossiers service: `uvicorn --factory cdap_dossiers.app:build`."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from cdap_dossiers import handlers, lookups, routes_dossiers, web
from cdap_dossiers.config import Context, Settings
from cdap_dossiers.policy import load_policy
from cdap_shared import outbox, standing
from cdap_shared.auth import TokenVerifier
from cdap_shared.db import asyncpg_dsn
from cdap_shared.hotpool import HotPool
from cdap_shared.runtime import ServiceRuntime
from cdap_shared.topics import named
from cdap_shared.warmup import WarmUp


def build(settings: Settings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """Wire settings, policy, database, broker, consumers and routes into one app."""
    settings = settings or Settings()
    policy = load_policy(settings.policy_path)  # a bad policy stops the service here, with its reason
    runtime = ServiceRuntime(settings)
    runtime.consume(
        settings.caf_topic,
        settings.identity_topic,
        group_id=settings.consumer_group,
        handler=handlers.handler(settings),
        accepts=(*handlers.HANDLERS, *standing.EVENT_TYPES),
    )
    runtime.publishes(named("dossier.consultations"), ("dossier.consulted", "dossier.searched"))

    # The lookups' own connections (cdap_shared.hotpool: asyncpg's pool cost them more than a statement).
    connections = HotPool(asyncpg_dsn(settings.database_url), settings.db_pool_size, prepare=lookups.prepare)
    # Their records, appended together on a connection of their own (outbox.GroupAppend).
    records = HotPool(asyncpg_dsn(settings.database_url), 1, prepare=outbox.prepare_group_append)
    verifier = verifier or runtime.token_verifier()
    # Before /ready says ready: every lookup connection open with its statements prepared, the token keys
    # fetched, then what exists frozen out of the collector's reach (the full collections lookups trigger
    # no longer walk it: the lookup's p99 fell by about half, docs/architecture.md, "Dossiers: a lookup").
    warm_up = WarmUp(connections.fill, records.fill, verifier.load_keys, _freeze)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with runtime.lifespan(app), warm_up.running():
            try:
                yield
            finally:
                await connections.close()
                await records.close()

    app = runtime.create_app(
        title="CDAP dossiers",
        lifespan=lifespan,
        routers=[routes_dossiers.router],
        problems=web.PROBLEMS,
        ready_checks={"warm_up": warm_up.check},
    )
    app.add_hot_route(
        "GET", routes_dossiers.LOOKUP_PATH, routes_dossiers.well_formed, routes_dossiers.hot_lookup
    )
    app.state.ctx = Context(
        settings, policy, runtime, lookups.Lookups(connections, outbox.GroupAppend(records))
    )
    app.state.standing = standing.ProjectedStanding(runtime)
    app.state.record_refusal = routes_dossiers.record_refusal
    app.state.token_verifier = verifier
    return app


async def _freeze() -> None:
    """Collect once, then move every object that survives out of the collector's reach."""
    gc.collect()
    gc.freeze()
