"""A prefetching consumer (the next batch fetched and validated while one is applied), on the real broker
and database: every event applied once and in its key's order, offsets committed to the end, even
when batches are rewound by outages while the next one was already fetched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_shared import events as ev
from cdap_shared.consumer import EventConsumer, Fresh
from cdap_shared.db import create_engine, create_tables, session_factory
from cdap_shared.envelope import CloudEvent
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import make_producer
from cdap_testing import eventually
from cdap_testing.fuzz import committed_offset

from .pipeline import Effect
from .samples import SAMPLES

pytestmark = pytest.mark.stack

KEYS = [f"r-{k}" for k in range(12)]
PER_KEY = 60
STAGE = "access.request.stage_approved"
FAILING = (2, 3)  # the calls of the batch handler that fail: a batch rewound twice
PARTITIONS = 3  # `make_topic`'s


async def test_a_prefetching_consumer_applies_each_event_once_in_order_through_rewound_batches(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
) -> None:
    topic = await make_topic("prefetch")
    engine = create_engine(await make_database(), 5)
    await create_tables(engine)
    sessions = session_factory(engine)
    batches = 0

    async def apply(session: AsyncSession, batch: Fresh) -> None:
        nonlocal batches
        batches += 1
        session.add_all(
            Effect(event_id=i.event.id, event_type=i.event.type, subject=i.event.subject) for i in batch
        )
        await session.flush()
        if batches in FAILING:  # the database "goes away" after the batch's writes: all rolled back
            raise ConnectionResetError("connection lost")

    events = {
        key: [ev.make_event(STAGE, source="/test", subject=key, data=SAMPLES[STAGE]) for _ in range(PER_KEY)]
        for key in KEYS
    }
    producer = make_producer(stack["kafka"])
    await producer.start()
    try:
        for n in range(PER_KEY):
            for key in KEYS:
                partition = KEYS.index(key) % PARTITIONS
                await producer.send(topic, events[key][n].to_bytes(), key=key.encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()

    broker = KafkaBroker(stack["kafka"], security=KafkaLogin.from_env().security(), logger=None)
    group = f"group-{topic}"
    consumer = EventConsumer(
        broker, sessions, group_id=group, batch_handler=apply, outage_delay=0.05, prefetch=True
    )
    # A batch is then one partition's records, so the prefetched batch is another partition's: a
    # rewind must take that one back too.
    consumer.subscribe(topic, max_records=len(KEYS) // PARTITIONS * PER_KEY)
    await broker.start()
    try:

        async def all_applied() -> bool:
            async with sessions() as session:
                return len((await session.execute(select(Effect.id))).all()) >= len(KEYS) * PER_KEY

        await eventually(all_applied, within=60)
        ends = await _end_offsets(stack["kafka"], topic)

        async def committed_to_the_end() -> bool:
            return all(
                [await committed_offset(stack["kafka"], group, topic, p) == end for p, end in ends.items()]
            )

        await eventually(committed_to_the_end, within=30)
    finally:
        await broker.stop()

    assert batches >= PARTITIONS + len(FAILING), "the rewound batches were taken again"
    async with sessions() as session:
        rows = (await session.execute(select(Effect.event_id, Effect.subject).order_by(Effect.id))).all()  # type: ignore[arg-type]
    await engine.dispose()
    applied = [event_id for event_id, _ in rows]
    assert len(applied) == len(set(applied)) == len(KEYS) * PER_KEY  # each once, none lost
    for key in KEYS:
        assert [e for e, subject in rows if subject == key] == [e.id for e in events[key]]  # the key's order


async def _end_offsets(kafka: str, topic: str) -> dict[int, int]:
    reader = AIOKafkaConsumer(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        if not partitions:
            await reader.topics()
            partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in (await reader.end_offsets(partitions)).items()}
    finally:
        await reader.stop()


async def test_a_prepared_record_reaches_the_handler_with_its_preparation_and_a_refused_one_the_dlq(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
) -> None:
    """`prepare` runs on each record outside the transaction; what it refuses (a `ValueError`) is
    dead-lettered with its reason like a malformed record, and the others are applied."""
    topic = await make_topic("prepare")
    engine = create_engine(await make_database(), 5)
    await create_tables(engine)
    sessions = session_factory(engine)
    prepared: dict[str, object] = {}

    def prepare(record: ConsumerRecord[Any, Any], event: CloudEvent, data: ev.EventData) -> str:
        if event.subject == "refused":
            raise ValueError("refused by prepare")
        return f"{event.subject}@{record.offset}"

    async def apply(session: AsyncSession, batch: Fresh) -> None:
        prepared.update((i.event.id, i.prepared) for i in batch)

    events = [
        ev.make_event(STAGE, source="/test", subject=subject, data=SAMPLES[STAGE])
        for subject in ("kept-0", "refused", "kept-2")
    ]
    producer = make_producer(stack["kafka"])
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, event.to_bytes(), key=b"k", partition=0)
    finally:
        await producer.stop()

    broker = KafkaBroker(stack["kafka"], security=KafkaLogin.from_env().security(), logger=None)
    consumer = EventConsumer(
        broker, sessions, group_id=f"group-{topic}", batch_handler=apply, prefetch=True, prepare=prepare
    )
    consumer.subscribe(topic)
    await broker.start()

    async def both_applied() -> bool:
        return len(prepared) == 2

    try:
        await eventually(both_applied, within=30)
        dead = await _dead_letters(stack["kafka"], topic)
    finally:
        await broker.stop()
        await engine.dispose()
    assert prepared == {events[0].id: "kept-0@0", events[2].id: "kept-2@2"}
    assert [(value, headers["x-error"]) for value, headers in dead] == [
        (events[1].to_bytes(), "ValueError: refused by prepare")
    ]


async def _dead_letters(kafka: str, topic: str) -> list[tuple[bytes, dict[str, str]]]:
    reader = AIOKafkaConsumer(
        f"{topic}.dlq",
        bootstrap_servers=kafka,
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
    )
    await reader.start()
    out: list[tuple[bytes, dict[str, str]]] = []
    try:
        for _ in range(50):
            for records in (await reader.getmany(timeout_ms=200)).values():
                out += [(r.value, {k: v.decode() for k, v in r.headers}) for r in records]
            if out:
                break
    finally:
        await reader.stop()
    return out
