"""A service run inside the test process: its app's lifespan started as uvicorn starts it (consumers,
relay, periodic jobs on the real Kafka and PostgreSQL), an HTTP client on the app, and a producer to
feed its topics. Each service's tests/conftest.py subclasses `InProcess` with its settings and actors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select

from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_shared.migrations import upgrade_to_head
from cdap_shared.outbox import OutboxRecord
from cdap_shared.relay import make_producer
from cdap_testing import create_database, drop_database, plain_dsn, with_database


@dataclass(kw_only=True)
class InProcess:
    """A running app, its client (`base_url` names the service) and a producer on the test's broker."""

    app: FastAPI
    client: AsyncClient
    producer: AIOKafkaProducer
    lifespan: AbstractAsyncContextManager[Any]
    running: bool = True

    async def outbox(self, event_type: str | None = None) -> list[CloudEvent]:
        """Every event the service staged in its outbox (of `event_type` only, if given), oldest first."""
        query = select(OutboxRecord).order_by(OutboxRecord.id)  # type: ignore[arg-type]
        if event_type is not None:
            query = query.where(OutboxRecord.event_type == event_type)  # type: ignore[arg-type]
        async with self.app.state.sessions() as s:
            rows = (await s.execute(query)).scalars().all()
        return [CloudEvent.from_bytes(r.payload) for r in rows]

    async def stop(self) -> None:
        """Stop as a SIGTERM would (lifespan exit); a test may stop a service and start its next one."""
        if self.running:
            self.running = False
            await self.client.aclose()
            await self.producer.stop()
            await self.lifespan.__aexit__(None, None, None)


Started = TypeVar("Started", bound=InProcess)


@pytest.fixture(scope="session")
async def migrated_templates(stack: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """service folder -> a database of the run at that service's latest migration, made once (by its
    migrations) and copied for each test: a copy costs a tenth of running the migrations again."""
    made: dict[str, str] = {}
    yield made
    conn = await asyncpg.connect(plain_dsn(stack["database"]))
    try:
        for name in made.values():
            await drop_database(conn, name)
    finally:
        await conn.close()


@pytest.fixture
async def migrated_database(
    stack: dict[str, str],
    make_database: Callable[..., Awaitable[str]],
    migrated_templates: dict[str, str],
) -> Callable[[str], Awaitable[str]]:
    """`await migrated_database(service_dir)`: a throwaway database at the service's latest migration."""

    async def make(service_dir: str) -> str:
        if service_dir not in migrated_templates:
            name = f"cdap_template_{new_event_id().replace('-', '')[-16:]}"
            await create_database(plain_dsn(stack["database"]), name)
            migrated_templates[service_dir] = name
            await upgrade_to_head(service_dir, with_database(stack["database"], name))
        return await make_database(template=migrated_templates[service_dir])

    return make


@pytest.fixture
async def start_app(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`await start_app(Kind, app, base_url, **fields)`: `app` started, as a `Kind` (an `InProcess`)
    holding `fields` too; every app started is stopped after the test, before its databases and topics
    (which this fixture depends on for that order) are dropped."""
    started: list[InProcess] = []

    async def start(kind: type[Started], app: FastAPI, base_url: str, **fields: Any) -> Started:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        producer = make_producer(stack["kafka"])
        client = AsyncClient(transport=ASGITransport(app=app), base_url=base_url)
        service = kind(app=app, client=client, producer=producer, lifespan=lifespan, **fields)
        started.append(service)
        await producer.start()
        return service

    yield start
    for service in started:
        await service.stop()
