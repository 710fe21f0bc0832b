"""Outbox -> relay -> Kafka -> inbox consumer, on the real broker and database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from cdap_shared import events as ev
from cdap_shared.db import asyncpg_dsn
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import OutboxRelay, make_producer
from cdap_testing import eventually, relay_parked

from .pipeline import Pipeline
from .samples import SAMPLES

pytestmark = pytest.mark.stack


def sample(event_type: str, subject: str = "s-1") -> ev.CloudEvent:
    return ev.make_event(event_type, source="/test", subject=subject, data=SAMPLES[event_type])


async def read_topic(
    kafka: str, topic: str, expect: int, timeout_ms: int = 10_000
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on a topic from the beginning, once `expect` records were seen or time ran out."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka,
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    seen: list[tuple[bytes, bytes]] = []
    try:
        for _ in range(timeout_ms // 200):
            batch = await consumer.getmany(timeout_ms=200)
            seen += [(r.key, r.value) for records in batch.values() for r in records]
            if len(seen) >= expect:
                break
    finally:
        await consumer.stop()
    return seen


async def test_every_event_type_round_trips_once(pipeline: Pipeline) -> None:
    events = [sample(t, subject=f"s-{i}") for i, t in enumerate(sorted(SAMPLES))]
    await pipeline.write(*events)
    pipeline.start_relay()
    effects = await eventually(lambda: _all_applied(pipeline, len(events)))
    assert effects == {e.id: 1 for e in events}
    assert await pipeline.unsent() == 0
    # What went over the wire is the exact envelope, keyed by subject.
    wire = await read_topic(pipeline.kafka, pipeline.topic, len(events))
    assert sorted(wire) == sorted((e.subject.encode(), e.to_bytes()) for e in events)


async def _all_applied(p: Pipeline, n: int) -> dict[str, int] | None:
    effects = await p.effects()
    return effects if len(effects) >= n else None


async def test_nothing_is_published_when_the_domain_transaction_rolls_back(pipeline: Pipeline) -> None:
    from cdap_shared import outbox

    rolled_back = sample("identity.user.activated")
    with pytest.raises(RuntimeError):
        async with pipeline.producer_sessions() as session, session.begin():
            await outbox.add(session, rolled_back, topic=pipeline.topic)
            raise RuntimeError("domain check failed")
    committed = sample("identity.user.suspended")
    await pipeline.write(committed)
    pipeline.start_relay()
    await eventually(lambda: _all_applied(pipeline, 1))
    assert await pipeline.effects() == {committed.id: 1}


async def test_relay_killed_before_publishing_delivers_once_after_restart(pipeline: Pipeline) -> None:
    # The domain transaction committed, but no relay was running (it had been killed).
    events = [sample("access.request.submitted", subject=f"r-{i}") for i in range(20)]
    await pipeline.write(*events)
    assert await pipeline.unsent() == 20
    pipeline.start_relay()
    await eventually(lambda: _all_applied(pipeline, 20))
    assert await pipeline.effects() == {e.id: 1 for e in events}


class CrashAfterPublish(OutboxRelay):
    """A relay that dies after Kafka acknowledged the batch but before marking rows sent."""

    async def mark_sent(self, conn: object, ids: list[int]) -> None:  # type: ignore[override]
        self.stop()
        raise ConnectionResetError("killed between publish and mark-sent")


async def test_relay_killed_after_publishing_is_deduplicated_by_the_inbox(pipeline: Pipeline) -> None:
    events = [sample("identity.grant.issued", subject=f"g-{i}") for i in range(10)]
    await pipeline.write(*events)
    crashing = CrashAfterPublish(asyncpg_dsn(pipeline.producer_url), pipeline.kafka, poll_interval=0.2)
    pipeline.start_relay(crashing)
    # The crashed relay's batch reached Kafka, yet the rows are still unsent.
    assert len(await read_topic(pipeline.kafka, pipeline.topic, 10)) == 10
    await pipeline.stop_relays()
    assert await pipeline.unsent() == 10
    pipeline.start_relay()  # the restarted relay publishes the same rows again
    await eventually(lambda: _all_applied(pipeline, 10))
    assert len(await read_topic(pipeline.kafka, pipeline.topic, 20)) == 20
    await eventually(lambda: _is_zero(pipeline.unsent))
    assert await pipeline.effects() == {e.id: 1 for e in events}


async def _is_zero(f: Callable[[], Awaitable[int]]) -> bool:
    return await f() == 0


async def test_duplicates_and_out_of_order_duplicates_apply_once(pipeline: Pipeline) -> None:
    a, b = sample("dossier.consulted", subject="1234567"), sample("dossier.consulted", subject="1234567")
    producer = make_producer(pipeline.kafka)
    await producer.start()
    try:
        for event in (a, b, a, b, b, a):
            await producer.send_and_wait(pipeline.topic, event.to_bytes(), key=b"1234567")
        # Also a duplicate arriving much later, in a later batch.
        await eventually(lambda: _all_applied(pipeline, 2))
        await producer.send_and_wait(pipeline.topic, a.to_bytes(), key=b"1234567")
        await producer.send_and_wait(pipeline.topic, sample("identity.user.activated").to_bytes(), key=b"x")
    finally:
        await producer.stop()
    await eventually(lambda: _all_applied(pipeline, 3))
    effects = await pipeline.effects()
    assert effects[a.id] == 1 and effects[b.id] == 1


async def test_per_key_order_is_kept(pipeline: Pipeline) -> None:
    seen: list[str] = []
    events = [sample("access.request.stage_approved", subject="r-order") for _ in range(200)]
    for chunk in range(0, 200, 50):
        await pipeline.write(*events[chunk : chunk + 50])
    pipeline.start_relay()
    wire = await read_topic(pipeline.kafka, pipeline.topic, 200)
    seen = [ev.CloudEvent.from_bytes(v).id for _, v in wire]
    assert seen == [e.id for e in events]


async def test_per_key_order_is_kept_when_a_claim_fills_several_record_batches(pipeline: Pipeline) -> None:
    from cdap_shared import outbox

    # About 1.5 MB in one claim: each key's partition needs two or more record batches (256 KB at most).
    keys = ["r-a", "r-b", "r-c"]
    events = [sample("access.request.stage_approved", subject=keys[i % 3]) for i in range(3600)]
    async with pipeline.producer_sessions() as session, session.begin():
        await outbox.add_all(session, events, topic=pipeline.topic)
    pipeline.start_relay(OutboxRelay(asyncpg_dsn(pipeline.producer_url), pipeline.kafka, batch_size=3600))
    wire = await read_topic(pipeline.kafka, pipeline.topic, 3600)
    for key in keys:
        seen = [ev.CloudEvent.from_bytes(v).id for k, v in wire if k == key.encode()]
        assert seen == [e.id for e in events if e.subject == key]


async def test_a_transaction_staging_many_events_delivers_each_once(pipeline: Pipeline) -> None:
    from cdap_shared import outbox

    events = [sample("dossier.consulted", subject=f"{1_000_000 + i}") for i in range(250)]
    async with pipeline.producer_sessions() as session, session.begin():
        await outbox.add_all(session, events, topic=pipeline.topic)
    pipeline.start_relay()
    await eventually(lambda: _all_applied(pipeline, 250))
    assert await pipeline.effects() == {e.id: 1 for e in events}


async def test_a_row_committed_by_add_pg_wakes_the_relay_without_waiting_for_its_poll(
    pipeline: Pipeline,
) -> None:
    from cdap_shared import outbox

    # A relay that would look for rows once an hour: only the wake can bring the event.
    pipeline.start_relay(OutboxRelay(asyncpg_dsn(pipeline.producer_url), pipeline.kafka, poll_interval=3600))
    await eventually(lambda: relay_parked(pipeline.producer_url))
    event = sample("identity.login.succeeded")
    conn = await asyncpg.connect(asyncpg_dsn(pipeline.producer_url))
    try:
        await outbox.add_pg(conn, event, topic=pipeline.topic)  # no transaction: committed, no notification
    finally:
        await conn.close()
    await eventually(lambda: _all_applied(pipeline, 1))
    assert await pipeline.effects() == {event.id: 1}
