"""Composition root of the audit service: `uvicorn --factory cdap_audit.app:build`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from cdap_audit import asyncapi, directory, partitions, signing
from cdap_audit.config import Settings
from cdap_audit.ingest import Ingestor
from cdap_audit.routes import router, witness_router
from cdap_audit.rules import load_rules
from cdap_audit.stream import TreeWatcher
from cdap_audit.tasks import BackgroundTasks
from cdap_shared import asyncapi as shared_asyncapi
from cdap_shared import standing
from cdap_shared.auth import TokenVerifier
from cdap_shared.http import create_app
from cdap_shared.mail import Mailer, MailRelay
from cdap_shared.runtime import ServiceRuntime

log = structlog.get_logger(__name__)


def build(settings: Settings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """Wire settings, rules, database, broker, consumer, background tasks and routes into one app."""
    settings = settings or Settings()
    rules = load_rules(settings.alert_rules_path)  # a bad rules file stops the service here, with its reason
    # A bad signing key (variable or file) or witness key stops it here too.
    signer = signing.configured_signer(settings.audit_signing_key, settings.audit_signing_key_file)
    witnesses = signing.configured_witnesses(settings.audit_witness_keys)
    runtime = ServiceRuntime(settings)
    tasks = BackgroundTasks(settings, runtime.engine, runtime.sessions, rules)
    tasks.signer = signer
    runtime.consume(
        settings.identity_topic,
        settings.access_topic,
        settings.consultations_topic,
        settings.alerts_topic,
        group_id=settings.consumer_group,
        batch_handler=Ingestor(
            rules,
            settings.alerts_topic,
            traced=settings.otlp_endpoint is not None,
            on_commit=tasks.tree_grew,  # a committed batch is signed without waiting for a timer
        ),
        max_records=settings.consumer_batch,
    )
    # Names and auditors: its own group on identity.events, so the ingestion's batches never wait for it.
    runtime.consume(
        settings.identity_topic,
        group_id=f"{settings.consumer_group}-directory",
        handler=directory.apply,
        inbox=False,
    )
    mail_relay = MailRelay(runtime.sessions, Mailer(settings.smtp_url))
    watcher = TreeWatcher(runtime.sessions)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # This month's partition before the consumer starts; if the database is not there yet, the
        # default partition takes the rows and the maintenance task moves them later.
        try:
            await asyncio.wait_for(partitions.ensure(runtime.engine, ahead=settings.partitions_ahead), 10)
        except Exception as exc:
            log.warning("partitions not checked at start, will retry", error=type(exc).__name__)
        async with runtime.lifespan(app):
            tasks.start()
            mailing = asyncio.create_task(mail_relay.run(), name="mail-relay")
            try:
                yield
            finally:
                mail_relay.stop()
                await mailing
                await watcher.stop()
                await tasks.stop()

    app = create_app(
        title="CDAP audit",
        lifespan=lifespan,
        routers=[router, witness_router],
        ready_checks=runtime.ready_checks,
        # A witness has no account: its cosignature (a key of CDAP_AUDIT_WITNESS_KEYS) is its credential.
        public_paths=("/v1/checkpoints/cosignatures",),
        trusted_proxies=settings.trusted_proxies,
        token_url=settings.token_url,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.sessions = runtime.sessions
    app.state.rules = rules
    app.state.tasks = tasks
    app.state.witnesses = witnesses
    app.state.watcher = watcher
    app.state.standing = standing.ProjectedStanding(runtime)
    shared_asyncapi.install(app, asyncapi.document(settings))

    app.state.token_verifier = verifier or TokenVerifier(
        settings.jwks_url, settings.jwt_audience, settings.jwt_issuer
    )
    return app
