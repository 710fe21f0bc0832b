"""A consumer that cannot progress is reported: lag metric, 503 on /ready naming it, back to 200 after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_shared import events as ev
from cdap_shared.http import create_app
from cdap_shared.relay import make_producer
from cdap_shared.watch import ConsumerWatch
from cdap_testing import eventually

from .pipeline import Pipeline, build_pipeline, close_pipeline, record_effect
from .samples import SAMPLES
from .test_dead_letters import _applied

pytestmark = pytest.mark.stack

STALL_AFTER = 2.0


class Outage:
    """A handler whose database is 'down' until `end()`: every batch is rewound and retried."""

    def __init__(self) -> None:
        self.down = True

    async def __call__(self, session: AsyncSession, event: ev.CloudEvent) -> None:
        if self.down:
            raise ConnectionRefusedError("database unreachable")
        await record_effect(session, event)


@pytest.fixture
def outage() -> Outage:
    return Outage()


@pytest.fixture
async def pipeline(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    outage: Outage,
) -> AsyncIterator[Pipeline]:
    p = await build_pipeline(stack, make_database, make_topic, handler=outage)
    p.consumer.outage_delay = 0.1
    yield p
    await close_pipeline(p)


def lag(p: Pipeline) -> float:
    total = 0.0
    for partition in range(3):
        labels = {"group": p.consumer.group_id, "topic": p.topic, "partition": str(partition)}
        total += REGISTRY.get_sample_value("cdap_consumer_lag", labels) or 0.0
    return total


async def test_a_stalled_consumer_is_not_ready_until_it_progresses(
    pipeline: Pipeline, outage: Outage
) -> None:
    watch = ConsumerWatch([pipeline.consumer], stall_after=STALL_AFTER, interval=0.2)
    app = create_app(title="t", ready_checks={"consumers": watch.check})
    watching = watch.periodic()
    watching.start()
    events = [
        ev.make_event(
            "identity.user.activated", source="/t", subject=f"u-{i}", data=SAMPLES["identity.user.activated"]
        )
        for i in range(5)
    ]
    producer = make_producer(pipeline.kafka)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(pipeline.topic, event.to_bytes(), key=event.subject.encode())
    finally:
        await producer.stop()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

            async def ready_status(expected: int) -> httpx.Response | None:
                answer = await client.get("/ready")
                return answer if answer.status_code == expected else None

            refused = await eventually(lambda: ready_status(503), within=STALL_AFTER + 15)
            assert refused.headers["content-type"].startswith("application/problem+json")
            why = refused.json()["failed"]["consumers"]
            assert pipeline.consumer.group_id in why and pipeline.topic in why
            assert lag(pipeline) == len(events)

            outage.down = False
            await eventually(lambda: ready_status(200), within=20)
            assert await eventually(lambda: _applied(pipeline, len(events)))
            await eventually(lambda: _zero(lag(pipeline)))
    finally:
        await watching.stop()


async def _zero(value: float) -> bool:
    return value == 0


async def _send(p: Pipeline, first: int, count: int) -> None:
    producer = make_producer(p.kafka)
    await producer.start()
    try:
        for i in range(first, first + count):
            data = SAMPLES["identity.user.activated"]
            event = ev.make_event("identity.user.activated", source="/t", subject=f"u-{i}", data=data)
            await producer.send_and_wait(p.topic, event.to_bytes(), key=event.subject.encode())
    finally:
        await producer.stop()


async def test_a_consumer_whose_client_stops_fetching_is_restarted_and_reads_on(
    pipeline: Pipeline, outage: Outage
) -> None:
    outage.down = False
    watch = ConsumerWatch([pipeline.consumer], stall_after=60, interval=0.2)
    restarts = {"group": pipeline.consumer.group_id}
    before = REGISTRY.get_sample_value("cdap_consumer_restarts_total", restarts) or 0.0
    watching = watch.periodic()
    watching.start()
    try:
        await _send(pipeline, 0, 3)
        assert await eventually(lambda: _applied(pipeline, 3))
        client = pipeline.consumer.kafka_consumer
        assert client is not None

        def unexpected(*args: object) -> None:
            raise RuntimeError("an error aiokafka's fetch routine does not expect")

        # What aiokafka does then: the routine ends, and `getmany` returns nothing from now on, silently.
        client._fetcher._get_actions_per_node = unexpected  # type: ignore[attr-defined]
        await eventually(lambda: _true(pipeline.consumer.kafka_consumer is not client), within=20)
        await _send(pipeline, 3, 3)
        assert await eventually(lambda: _applied(pipeline, 6), within=30)
        assert REGISTRY.get_sample_value("cdap_consumer_restarts_total", restarts) == before + 1
    finally:
        await watching.stop()


async def _true(value: bool) -> bool:
    return value
