"""The parts every service process runs: database engine, Kafka broker, outbox relay, consumers.

A service's composition root (`app.py`) builds one `ServiceRuntime`, registers its consumers, and
passes `runtime.lifespan` to `create_app`. The broker connects in the background, so the HTTP side
serves (and writes to its outbox) even while Kafka is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.publisher.usecase import DefaultPublisher
from prometheus_client import REGISTRY
from sqlalchemy import text

from cdap_shared import asyncapi, kafka_transport
from cdap_shared.auth import TokenVerifier
from cdap_shared.consumer import BatchHandler, EventConsumer, Handler, Prepare
from cdap_shared.db import asyncpg_dsn, create_engine, session_factory
from cdap_shared.housekeeping import Retention, sweep
from cdap_shared.http import ServiceApp, create_app
from cdap_shared.periodic import Periodic
from cdap_shared.problems import install_error_table
from cdap_shared.relay import OutboxRelay, count_backlog
from cdap_shared.relay_process import RelayProcess
from cdap_shared.settings import ServiceSettings
from cdap_shared.telemetry import configure_logging, configure_tracing
from cdap_shared.watch import ConsumerWatch

log = structlog.get_logger(__name__)
BACKLOG_SECONDS = 5.0  # how often each replica counts the unsent outbox rows (`cdap_outbox_backlog`)


async def _reset_if_in_transaction(conn: asyncpg.Connection) -> None:
    """What the pool does to a released connection. asyncpg's default (`RESET ALL`, `UNLISTEN *`, unlock
    advisory locks) is a round trip per release, a third of a lookup's; no user of this pool sets,
    listens or locks for a session (the relay has its own connection), so only an interrupted
    transaction needs undoing."""
    if conn.is_in_transaction():
        await conn.reset()


class ServiceRuntime:
    """Owns the long-lived resources of one service process."""

    def __init__(self, settings: ServiceSettings, *, run_relay: bool = True) -> None:
        self.settings = settings
        configure_logging(settings.service_name, settings.log_level)
        kafka_transport.install()  # before any Kafka client: uvicorn runs services on uvloop
        self.tracer_provider = configure_tracing(
            settings.service_name, settings.otlp_endpoint, settings.trace_sql
        )
        self.engine = create_engine(settings.database_url, settings.db_pool_size)
        self.sessions = session_factory(self.engine)
        self.broker = KafkaBroker(
            # FastStream takes a string as one address: a cluster's "host:port,host:port" becomes a list.
            settings.kafka_bootstrap.split(","),
            client_id=settings.service_name,
            security=settings.kafka_login.security(),
            enable_idempotence=True,
            acks="all",
            # FastStream's own metrics (batches received, their size and handling time, per subscriber)
            # next to CDAP's, on the /metrics every service serves.
            middlewares=[
                KafkaTelemetryMiddleware(tracer_provider=self.tracer_provider),
                KafkaPrometheusMiddleware(registry=REGISTRY, app_name=settings.service_name),
            ],
            logger=None,
        )
        self.relay: OutboxRelay | RelayProcess | None = None
        if run_relay and settings.outbox_relay_process:
            self.relay = RelayProcess(settings)
        elif run_relay:
            self.relay = OutboxRelay(
                asyncpg_dsn(settings.database_url),
                settings.kafka_bootstrap,
                batch_size=settings.outbox_batch_size,
                poll_interval=settings.outbox_poll_interval_seconds,
                login=settings.kafka_login,
            )
        self._tasks: list[asyncio.Task[Any]] = []
        self._jobs: list[Periodic] = []
        self.consumers: list[EventConsumer] = []
        self.watch = ConsumerWatch(
            self.consumers,
            stall_after=settings.consumer_stall_seconds,
            interval=settings.consumer_watch_interval_seconds,
        )
        self.broker_started = asyncio.Event()
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """A plain asyncpg pool for hot paths where the ORM's overhead shows (opened by `start`)."""
        if self._pool is None:
            raise RuntimeError("the runtime is not started")
        return self._pool

    def consume(
        self,
        *topics: str,
        group_id: str,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 500,
        inbox: bool = True,
        prefetch: bool = False,
        prepare: Prepare | None = None,
        accepts: Iterable[str] = (),
    ) -> EventConsumer:
        """Apply `handler` (or `batch_handler`, once per batch) to every event on `topics`, exactly once,
        in consumer group `group_id` (at least once with `inbox=False`: see `EventConsumer`; `prefetch`
        validates the next batch while one is applied, and runs `prepare` on its records). `accepts`:
        the event types the handler acts on, as the AsyncAPI document shows them (all by default)."""
        consumer = EventConsumer(
            self.broker,
            self.sessions,
            group_id=group_id,
            handler=handler,
            batch_handler=batch_handler,
            max_attempts=self.settings.consumer_max_attempts,
            inbox=inbox,
            prefetch=prefetch,
            prepare=prepare,
        )
        consumer.subscribe(
            *topics,
            max_records=max_records,
            offset_reset=self.settings.consumer_offset_reset,
            accepts=accepts,
        )
        self.consumers.append(consumer)
        return consumer

    def publishes(self, topic: str, event_types: Iterable[str]) -> DefaultPublisher:
        """Declare that this service publishes `event_types` on `topic` (the outbox relay's records), so
        the AsyncAPI document describes them."""
        return self.broker.publisher(
            topic, title=f"{topic}:send", description=asyncapi.KEYED, schema=asyncapi.envelopes(event_types)
        )

    def create_app(
        self,
        *,
        title: str,
        lifespan: Any,
        routers: Sequence[APIRouter],
        problems: Mapping[type[Exception], tuple[int, str]],
        public_paths: Sequence[str] = (),
        ready_checks: Mapping[str, Any] | None = None,
    ) -> ServiceApp:
        """The service's app on this runtime (`cdap_shared.http.create_app`): `/ready` checks the
        runtime and the service's own `ready_checks`, the domain errors answer from `problems`,
        `/asyncapi.json` describes the broker, and `app.state` holds the runtime and its sessions."""
        app = create_app(
            title=title,
            lifespan=lifespan,
            routers=routers,
            ready_checks={**self.ready_checks, **(ready_checks or {})},
            public_paths=public_paths,
            trusted_proxies=self.settings.trusted_proxies,
            token_url=self.settings.token_url,
        )
        install_error_table(app, problems)
        asyncapi.install(app, self.broker, title)
        app.state.runtime = self
        app.state.sessions = self.sessions
        return app

    def token_verifier(self) -> TokenVerifier:
        """A verifier of access tokens by identity's published keys, as the settings name them."""
        s = self.settings
        return TokenVerifier(s.jwks_url, s.jwt_audience, s.jwt_issuer)

    async def _start_broker(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.broker.start()
                self.broker_started.set()
                log.info("kafka broker connected")
                return
            except Exception as exc:
                log.warning("kafka unreachable, retrying", error=type(exc).__name__, retry_in=delay)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def start(self) -> None:
        # min_size=0: no connection at start, so the service starts (and answers 503) while
        # PostgreSQL is down.
        self._pool = await asyncpg.create_pool(
            asyncpg_dsn(self.settings.database_url),
            min_size=0,
            max_size=self.settings.db_pool_size,
            timeout=5,
            reset=_reset_if_in_transaction,
        )
        self._tasks.append(asyncio.create_task(self._start_broker(), name="broker"))
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        retention = Retention(
            outbox_hours=self.settings.outbox_retention_hours,
            inbox_days=self.settings.inbox_retention_days,
            sent_mail_hours=self.settings.sent_mail_retention_hours,
        )
        pool = self._pool
        self._jobs = [
            self.watch.periodic(),
            # Idempotent deletes: a purge cut short at shutdown is finished by the next process.
            Periodic(
                "housekeeping",
                lambda: sweep(pool, retention),
                self.settings.housekeeping_interval_seconds,
                grace=0,
            ),
            Periodic("outbox-backlog", lambda: count_backlog(pool), BACKLOG_SECONDS, grace=0),
        ]
        for job in self._jobs:
            job.start()

    async def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        for task in self._tasks:
            if task.get_name() == "broker" and not task.done():
                task.cancel()
        await asyncio.gather(*(job.stop() for job in self._jobs))
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10)
        with contextlib.suppress(Exception):
            await self.broker.stop()
        if self._pool is not None:
            await self._pool.close()
        await self.engine.dispose()

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    @property
    def ready_checks(self) -> dict[str, Any]:
        """What `/ready` checks for a service: its database, Kafka, that every consumer progresses, and
        that its relay runs when it has a process of its own."""
        checks = {"database": self.check_database, "kafka": self.check_kafka, "consumers": self.watch.check}
        if isinstance(self.relay, RelayProcess):
            checks["relay"] = self.relay.check
        return checks

    async def check_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def check_kafka(self) -> None:
        if not self.broker_started.is_set():
            raise ConnectionError("broker not connected")
        if not await self.broker.ping(timeout=2.0):
            raise ConnectionError("broker did not answer")
