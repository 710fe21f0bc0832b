"""A producer database with an outbox, a relay, Kafka, and a consumer database with an inbox."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from cdap_shared import outbox
from cdap_shared.consumer import EventConsumer
from cdap_shared.db import asyncpg_dsn, create_engine, create_tables, session_factory
from cdap_shared.envelope import CloudEvent
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import OutboxRelay


class Effect(SQLModel, table=True):
    """What the test consumer does with each event: one row per application (no unique key on purpose)."""

    __tablename__ = "test_effect"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str
    event_type: str
    subject: str


async def record_effect(session: AsyncSession, event: CloudEvent) -> None:
    session.add(Effect(event_id=event.id, event_type=event.type, subject=event.subject))


@dataclass
class Pipeline:
    topic: str
    kafka: str
    producer_url: str
    producer_engine: AsyncEngine
    producer_sessions: async_sessionmaker[AsyncSession]
    consumer_engine: AsyncEngine
    consumer_sessions: async_sessionmaker[AsyncSession]
    broker: KafkaBroker
    consumer: EventConsumer
    relays: list[tuple[OutboxRelay, asyncio.Task[None]]] = field(default_factory=list)

    async def write(self, *events: CloudEvent) -> None:
        """One 'domain' transaction that stages events in the outbox."""
        async with self.producer_sessions() as session, session.begin():
            for event in events:
                await outbox.add(session, event, topic=self.topic)

    def start_relay(self, relay: OutboxRelay | None = None) -> OutboxRelay:
        relay = relay or OutboxRelay(
            asyncpg_dsn(self.producer_url), self.kafka, poll_interval=0.2, retry_delay=0.2
        )
        self.relays.append((relay, asyncio.create_task(relay.run())))
        return relay

    async def stop_relays(self) -> None:
        for relay, task in self.relays:
            relay.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        self.relays.clear()

    async def effects(self) -> dict[str, int]:
        """event id -> how many times the consumer applied it."""
        async with self.consumer_sessions() as session:
            rows = await session.execute(
                select(Effect.event_id, func.count()).group_by(Effect.event_id)  # type: ignore[call-overload]
            )
            return {event_id: count for event_id, count in rows.all()}

    async def unsent(self) -> int:
        async with self.producer_sessions() as session:
            result = await session.execute(
                select(func.count())
                .select_from(outbox.OutboxRecord)
                .where(
                    outbox.OutboxRecord.sent_at.is_(None)  # type: ignore[union-attr]
                )
            )
            return int(result.scalar_one())


async def build_pipeline(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    handler: Callable[[AsyncSession, CloudEvent], Awaitable[None]] = record_effect,
    tracer_provider: object | None = None,
) -> Pipeline:
    producer_url, consumer_url = await make_database(), await make_database()
    producer_engine, consumer_engine = create_engine(producer_url, 5), create_engine(consumer_url, 5)
    await create_tables(producer_engine)
    await create_tables(consumer_engine)
    topic = await make_topic("pipeline")
    middlewares = [KafkaTelemetryMiddleware(tracer_provider=tracer_provider)] if tracer_provider else []
    broker = KafkaBroker(
        stack["kafka"], security=KafkaLogin.from_env().security(), middlewares=middlewares, logger=None
    )
    consumer_sessions = session_factory(consumer_engine)
    consumer = EventConsumer(
        broker, consumer_sessions, group_id=f"group-{topic}", handler=handler, retry_delay=0.05
    )
    consumer.subscribe(topic)
    await broker.start()
    return Pipeline(
        topic=topic,
        kafka=stack["kafka"],
        producer_url=producer_url,
        producer_engine=producer_engine,
        producer_sessions=session_factory(producer_engine),
        consumer_engine=consumer_engine,
        consumer_sessions=consumer_sessions,
        broker=broker,
        consumer=consumer,
    )


async def close_pipeline(p: Pipeline) -> None:
    await p.stop_relays()
    await p.broker.stop()
    await p.producer_engine.dispose()
    await p.consumer_engine.dispose()
