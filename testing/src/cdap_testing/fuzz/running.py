"""Running hostile records: a stand-in broker catching dead letters, publishing to and reading from the
real broker, feeding a service's handler in-process, fingerprints of its database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cdap_shared.consumer import BatchHandler, EventConsumer, Handler
from cdap_shared.db import session_factory
from cdap_shared.envelope import CloudEvent
from cdap_shared.events import dlq_for
from cdap_shared.kafka_access import KafkaLogin
from cdap_testing.fuzz.strategies import DLQ_HEADERS, NIR, Hostile


@dataclass(frozen=True)
class DeadLetter:
    """A record read back from a `.dlq` topic."""

    value: bytes
    headers: dict[str, str]


@dataclass
class DeadLetterSink:
    """Stands in for the `KafkaBroker` an `EventConsumer` publishes dead letters with."""

    published: list[tuple[str, bytes, bytes | None, dict[str, str]]] = field(default_factory=list)

    async def publish(
        self, value: bytes, *, topic: str, key: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Record `(topic, value, key, headers)` as the broker would have received it."""
        self.published.append((topic, value, key, dict(headers or {})))


def consumer_record(
    topic: str,
    value: bytes | None,
    offset: int,
    *,
    key: bytes | None = b"s-1",
    partition: int = 0,
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> ConsumerRecord[bytes, bytes]:
    """A `ConsumerRecord` as aiokafka hands it to the consumer (no deserializer: raw bytes)."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=list(headers),
    )


async def publish(bootstrap: str, topic: str, records: Sequence[Hostile], *, key: bytes = b"s-1") -> None:
    """Send `records` in order to partition 0 of `topic` (so what follows them waits behind them)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **KafkaLogin.from_env().options(), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                topic, record.value, key=key, partition=0, headers=list(record.headers)
            )
    finally:
        await producer.stop()


async def read_dead_letters(
    bootstrap: str, topic: str, expect: int, within: float = 30.0
) -> list[DeadLetter]:
    """The records of `<topic>.dlq` in their original order, once `expect` arrived (or time ran out)."""
    consumer = AIOKafkaConsumer(
        dlq_for(topic),
        bootstrap_servers=bootstrap,
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        deadline = asyncio.get_running_loop().time() + within
        while len(letters) < expect and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                letters += [
                    DeadLetter(r.value or b"", {k: (v or b"").decode(errors="replace") for k, v in r.headers})
                    for r in records
                ]
    finally:
        await consumer.stop()
    return sorted(letters, key=lambda letter: int(letter.headers.get("x-original-offset", -1)))


async def committed_offset(bootstrap: str, group: str, topic: str, partition: int = 0) -> int:
    """Where `group` has committed on `topic`'s partition (-1 before its first commit)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **KafkaLogin.from_env().options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, partition))
    return meta.offset if meta is not None else -1


# ----------------------------------------------------------------- a service's handler, in-process
async def feed(
    sessions: async_sessionmaker[AsyncSession],
    handler: Handler | BatchHandler,
    topic: str,
    values: Sequence[bytes],
    *,
    group: str = "fuzz",
    batched: bool = False,
) -> dict[int, dict[str, str]]:
    """Run `values` as one batch (offsets 0..n-1) through a real `EventConsumer` with `handler` (its
    `batch_handler` when `batched`); returns the headers of each dead letter by original offset. Retries
    are immediate, so a failing event costs `max_attempts` transactions, not seconds. Raises whatever
    the consumer lets escape (an outage)."""
    sink = DeadLetterSink()
    handlers = {"batch_handler" if batched else "handler": handler}
    consumer = EventConsumer(
        cast(KafkaBroker, sink),
        sessions,
        group_id=group,
        retry_delay=0,
        outage_delay=0,
        **handlers,  # type: ignore[arg-type]
    )
    await consumer.handle_records(
        tuple(consumer_record(topic, value, offset) for offset, value in enumerate(values))
    )
    letters = {int(headers["x-original-offset"]): headers for _, _, _, headers in sink.published}
    if len(letters) != len(sink.published):
        raise AssertionError("a record was dead-lettered twice")
    for offset, headers in letters.items():
        missing = set(DLQ_HEADERS) - set(headers)
        if missing or headers["x-original-topic"] != topic or NIR in headers["x-error"]:
            raise AssertionError(f"dead letter {offset} has bad headers: {headers}")
    return letters


async def assert_refused_and_unchanged(
    engine: AsyncEngine,
    handler: Handler | BatchHandler,
    topic: str,
    values: Sequence[bytes],
    *,
    batched: bool = False,
) -> None:
    """The property every service's consumer owes malformed events: `values` (records the contract
    refuses) are all dead-lettered as validation failures, and the service's database is unchanged."""
    before = await fingerprint(engine)
    dead = await feed(session_factory(engine), handler, topic, values, batched=batched)
    if sorted(dead) != list(range(len(values))):
        raise AssertionError(f"only offsets {sorted(dead)} of {len(values)} were dead-lettered")
    kinds = {headers["x-error-type"] for headers in dead.values()}
    if not kinds <= {"ValidationError", "UnknownEventType"}:
        raise AssertionError(f"dead-lettered for other reasons than the contract: {kinds}")
    if await fingerprint(engine) != before:
        raise AssertionError("a refused event changed the database")


def event_id(raw: bytes) -> str:
    """The id of a record the consumer accepts as an event."""
    return CloudEvent.from_bytes(raw).id


async def claimed(engine: AsyncEngine) -> set[str]:
    """The event ids in the service's inbox: the events it applied."""
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT event_id FROM inbox"))).scalars())


async def fingerprint(engine: AsyncEngine) -> dict[str, str]:
    """An md5 of every table's rows: two equal fingerprints mean nothing was written in between."""
    async with engine.connect() as conn:
        tables = (
            await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
        ).scalars()
        digests = {}
        for table in list(tables):
            query = f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM \"{table}\" t"  # noqa: S608 - names from the catalogue
            digests[table] = str((await conn.execute(text(query))).scalar_one())
        return digests
