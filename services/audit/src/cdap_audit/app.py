"""Composition root of the audit service: `uvicorn --factory cdap_audit.app:build`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from cdap_audit import (
    handlers,
    partitions,
    routes_alerts,
    routes_checkpoints,
    routes_entries,
    routes_freshness,
    routes_proofs,
    routes_stream,
    scheduler,
    signing,
)
from cdap_audit.config import Settings
from cdap_audit.ingest import prepare_entry
from cdap_audit.rules import load_rules
from cdap_audit.stream import TreeWatcher
from cdap_audit.web import PROBLEMS, Context
from cdap_shared import asyncapi, standing
from cdap_shared.auth import TokenVerifier
from cdap_shared.mail import Mailer, MailRelay
from cdap_shared.periodic import running
from cdap_shared.runtime import ServiceRuntime

log = structlog.get_logger(__name__)

GC_YOUNG_THRESHOLD = 100_000
"""Allocations between two young-generation collections during ingestion (Python's default: 700)."""


def build(settings: Settings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """Wire settings, rules, database, broker, consumers, background jobs and routes into one app."""
    settings = settings or Settings()
    rules = load_rules(settings.alert_rules_path)  # a bad rules file stops the service here, with its reason
    # A bad signing key (variable or file) or witness key stops it here too.
    configured = signing.configured_signer(settings.audit_signing_key, settings.audit_signing_key_file)
    witnesses = signing.configured_witnesses(settings.audit_witness_keys)
    runtime = ServiceRuntime(settings)
    committed = asyncio.Event()  # set by each ingested batch's commit: the signing job waits for it
    runtime.consume(
        settings.identity_topic,
        settings.access_topic,
        settings.consultations_topic,
        settings.alerts_topic,
        group_id=settings.consumer_group,
        batch_handler=handlers.ingestion(settings, rules, on_commit=committed.set),
        max_records=settings.consumer_batch,
        # The next batch is validated, and its entries' leaves computed, while PostgreSQL takes this one.
        prefetch=True,
        prepare=prepare_entry,
        # Every type on those topics is logged (`caf.*` is never consumed); its own alerts come back too.
        accepts=[
            t
            for p in ("identity.", "access.", "dossier.", "audit.alert.")
            for t in asyncapi.types_with_prefix(p)
        ],
    )
    runtime.consume(
        settings.identity_topic,
        group_id=f"{settings.consumer_group}-directory",
        handler=handlers.handler(settings),
        inbox=False,
        accepts=handlers.HANDLERS,
    )
    runtime.publishes(settings.alerts_topic, asyncapi.types_with_prefix("audit.alert."))
    runtime.publishes(settings.checkpoints_topic, asyncapi.types_with_prefix("audit.checkpoint."))
    key = signing.CheckpointKey(runtime.sessions, settings.audit_origin, configured)
    watcher = TreeWatcher(runtime.sessions)
    mail_relay = MailRelay(runtime.sessions, Mailer(settings.smtp_url))
    jobs = [
        *scheduler.jobs(settings, runtime.engine, runtime.sessions, rules, key, committed),
        mail_relay.periodic(),
    ]

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # This month's partition before the consumer starts; if the database is not there yet, the
        # default partition takes the rows and the maintenance job moves them later.
        try:
            await asyncio.wait_for(partitions.ensure(runtime.engine, ahead=settings.partitions_ahead), 10)
        except Exception as exc:
            log.warning("partitions not checked at start, will retry", error=type(exc).__name__)
        # What exists now (modules, models, the app) lives as long as the process: out of the collector's
        # reach, a full collection during ingestion no longer walks it (~20 % of its CPU per entry).
        gc.collect()
        gc.freeze()
        # A batch allocates thousands of containers (events, payloads, facts) that die with it, nearly
        # none in cycles: at the default 700 allocations, young collections cost ~25 % of decoding them.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        async with runtime.lifespan(app), running(*jobs):
            try:
                yield
            finally:
                await watcher.stop()

    app = runtime.create_app(
        title="CDAP audit",
        lifespan=lifespan,
        # The stream's path first: `/v1/entries/stream` is not an entry's index.
        routers=[
            routes_stream.router,
            routes_entries.router,
            routes_alerts.router,
            routes_checkpoints.router,
            routes_proofs.router,
            routes_checkpoints.witness_router,
            routes_freshness.router,
        ],
        problems=PROBLEMS,
        # A witness has no account: its cosignature (a key of CDAP_AUDIT_WITNESS_KEYS) is its credential.
        public_paths=("/v1/checkpoints/cosignatures",),
    )
    app.state.ctx = Context(settings, runtime.sessions, key, witnesses, watcher, runtime.watch)
    app.state.standing = standing.ProjectedStanding(runtime)
    app.state.token_verifier = verifier or runtime.token_verifier()
    return app
