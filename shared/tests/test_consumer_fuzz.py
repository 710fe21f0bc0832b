"""Hostile records through the real `EventConsumer`: bad ones go to the DLQ, the rest is applied once.

The property runs in-process (the consumer's `handle_records`, a real database for the inbox and the
handler's writes, a stand-in broker catching dead letters) so that hypothesis can try many batches
quickly; the last test sends the same kinds of records through the real broker.

Kinds of records: *malformed* (not an event, or a payload its model refuses) must be dead-lettered;
*valid* events must be applied exactly once, even when delivered twice or when another event reuses
their id; *awkward* events (valid, but with NUL characters, huge strings, extreme numbers) are either
applied or dead-lettered (here the handler stores the payload as JSONB, which refuses `\\u0000`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import pytest
from faststream.kafka import KafkaBroker
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cdap_shared.consumer import EventConsumer
from cdap_shared.db import create_engine, create_tables, session_factory
from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_shared.inbox import InboxRecord
from cdap_shared.kafka_access import KafkaLogin
from cdap_testing import eventually, fuzz

from .pipeline import record_effect

pytestmark = pytest.mark.stack

TOPIC = "fuzz.events"
GROUP = "fuzz-group"
Kind = Literal["malformed", "awkward", "valid", "duplicate"]

FUZZ = fuzz.fuzz_settings(max_examples=60)


async def store_event(session: AsyncSession, event: CloudEvent) -> None:
    """A handler that keeps everything: the payload goes into JSONB, as most projections do."""
    await session.execute(
        text("INSERT INTO fuzz_applied (event_id, type, data) VALUES (:id, :type, CAST(:data AS jsonb))"),
        {"id": event.id, "type": event.type, "data": json.dumps(event.data)},
    )


@dataclass
class Bench:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    def consumer(self, sink: fuzz.DeadLetterSink) -> EventConsumer:
        # retry_delay=0: a failing event is still tried max_attempts times, without the waits.
        return EventConsumer(
            cast(Any, sink), self.sessions, group_id=GROUP, handler=store_event, retry_delay=0, outage_delay=0
        )

    async def reset(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text("TRUNCATE inbox, fuzz_applied"))

    async def applied(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT event_id, count(*) FROM fuzz_applied GROUP BY event_id"))
            return {event_id: n for event_id, n in rows.all()}


@pytest.fixture
async def bench(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[Bench]:
    engine = create_engine(await make_database(), 5)
    await create_tables(engine, InboxRecord.metadata)
    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE fuzz_applied (id serial PRIMARY KEY, event_id text, type text, data jsonb)")
        )
    yield Bench(engine, session_factory(engine))
    await engine.dispose()


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[Kind, bytes]]:
    """Hostile records with valid events interleaved, some of those delivered twice (a redelivery, or
    another valid event reusing the id)."""
    items: list[tuple[Kind, bytes]] = draw(
        st.lists(
            st.one_of(
                fuzz.malformed_records().map(lambda raw: ("malformed", raw)),
                fuzz.awkward_payloads().map(lambda raw: ("awkward", raw)),
                fuzz.valid_events().map(lambda event: ("valid", event.to_bytes())),
            ),
            min_size=1,
            max_size=12,
        )
    )
    for kind, raw in list(items):
        if kind == "valid" and draw(st.booleans()):
            event = CloudEvent.from_bytes(raw)
            twin = raw if draw(st.booleans()) else _same_id(event, draw(fuzz.valid_events()))
            items.insert(draw(st.integers(items.index((kind, raw)) + 1, len(items))), ("duplicate", twin))
    return items


def _same_id(original: CloudEvent, other: CloudEvent) -> bytes:
    return other.model_copy(update={"id": original.id}).to_bytes()


@FUZZ
@given(batch=batches(), header_sets=st.lists(fuzz.hostile_headers, min_size=24, max_size=24))
async def test_hostile_batches_are_dead_lettered_and_valid_events_applied_once(
    bench: Bench, batch: list[tuple[Kind, bytes]], header_sets: list[fuzz.Headers]
) -> None:
    await bench.reset()
    sink = fuzz.DeadLetterSink()
    records = tuple(
        fuzz.consumer_record(TOPIC, raw, offset, headers=header_sets[offset])
        for offset, (_, raw) in enumerate(batch)
    )

    await bench.consumer(sink).handle_records(records)  # must not raise: nothing here is an outage

    dead = {int(letter[3]["x-original-offset"]): letter for letter in sink.published}
    assert len(dead) == len(sink.published), "a record was dead-lettered twice"
    applied = await bench.applied()
    for offset, (kind, raw) in enumerate(batch):
        if kind == "malformed":
            assert offset in dead, f"malformed record at {offset} was not dead-lettered: {raw[:200]!r}"
            assert_dead_letter(dead[offset], raw, offset, header_sets[offset])
        elif kind in ("valid", "duplicate"):
            assert offset not in dead, f"valid event at {offset} dead-lettered: {dead[offset][3]}"
            assert applied.get(CloudEvent.from_bytes(raw).id) == 1
        else:  # awkward: stored if the database takes it, dead-lettered if not; never both, never lost
            event_id = CloudEvent.from_bytes(raw).id
            assert (offset in dead) != (event_id in applied), f"awkward record at {offset}: {raw[:200]!r}"
            if offset in dead:
                assert_dead_letter(dead[offset], raw, offset, header_sets[offset])
    # Nothing else was applied, and nothing twice (a duplicate shares its original's id).
    assert set(applied.values()) <= {1}
    kept = {CloudEvent.from_bytes(raw).id for offset, (kind, raw) in enumerate(batch) if offset not in dead}
    assert set(applied) == kept


def assert_dead_letter(
    letter: tuple[str, bytes, bytes | None, dict[str, str]], raw: bytes, offset: int, sent: fuzz.Headers
) -> None:
    """The dead letter is the untouched record on `<topic>.dlq`, with the documented headers."""
    topic, value, key, headers = letter
    assert topic == f"{TOPIC}.dlq"
    assert value == raw and key == b"s-1"
    assert {name for name, _ in sent} | set(fuzz.DLQ_HEADERS) == set(headers)  # its own headers kept
    assert headers["x-original-topic"] == TOPIC and headers["x-consumer-group"] == GROUP
    assert headers["x-original-partition"] == "0" and headers["x-original-offset"] == str(offset)
    assert headers["x-error"] and headers["x-error-type"]
    # The error says what is wrong, never with the offending values (a NIR stays out of the DLQ headers).
    assert fuzz.NIR not in headers["x-error"], headers["x-error"]


async def test_a_header_without_value_is_dead_lettered_not_a_stall(bench: Bench) -> None:
    """Kafka lets a header have no value; decoding it used to raise out of the consumer, so the batch
    was rewound onto the same record forever. The record now goes to the DLQ like any other."""
    sink = fuzz.DeadLetterSink()
    event = next_valid()
    records = (
        fuzz.consumer_record(TOPIC, b"not json", 0, headers=[("traceparent", None)]),
        fuzz.consumer_record(TOPIC, event.to_bytes(), 1, headers=[("x-empty", None)]),
    )
    await bench.consumer(sink).handle_records(records)
    assert [int(h["x-original-offset"]) for _, _, _, h in sink.published] == [0]
    assert sink.published[0][3]["traceparent"] == ""
    assert await bench.applied() == {event.id: 1}


def next_valid() -> CloudEvent:
    return CloudEvent.model_validate(fuzz.envelope("identity.user.activated", {"user_id": "u-fuzz"}))


@fuzz.ONE_DRAW
@given(hostile=fuzz.hostile_batch(per_kind=4))
async def test_through_the_broker_every_hostile_record_is_dead_lettered_and_the_next_event_applied(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    hostile: list[fuzz.Hostile],
) -> None:
    engine = create_engine(await make_database(), 5)
    await create_tables(engine)
    topic, group = await make_topic("fuzz"), f"fuzz-{new_event_id()}"
    valid = next_valid()
    # A tombstone too (no value at all): it is not an event either.
    hostile = [*hostile, fuzz.Hostile(None, (("traceparent", None),))]
    # Published before the consumer starts, so hostile records and the valid event share batches: a bad
    # header used to make FastStream drop its whole batch, the valid event with it.
    await fuzz.publish(stack["kafka"], topic, [*hostile, fuzz.Hostile(valid.to_bytes())])
    broker = KafkaBroker(stack["kafka"], security=KafkaLogin.from_env().security(), logger=None)
    EventConsumer(
        broker, session_factory(engine), group_id=group, handler=record_effect, retry_delay=0
    ).subscribe(topic)
    await broker.start()
    try:

        async def applied() -> dict[str, int]:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT event_id, count(*) FROM test_effect GROUP BY event_id")
                )
                return {event_id: n for event_id, n in rows.all()}

        assert await eventually(applied) == {valid.id: 1}  # behind every hostile record, on one partition
        letters = await fuzz.read_dead_letters(stack["kafka"], topic, len(hostile))
        # Untouched, but for the tombstone: its dead letter has an empty value.
        assert [letter.value for letter in letters] == [record.value or b"" for record in hostile]
        for offset, letter in enumerate(letters):
            assert letter.headers["x-original-offset"] == str(offset)
            assert set(fuzz.DLQ_HEADERS) <= set(letter.headers)
            assert fuzz.NIR not in letter.headers["x-error"]
        # Still consuming: it committed past the valid event.
        await eventually(lambda: _committed(stack["kafka"], group, topic, len(hostile) + 1))
    finally:
        await broker.stop()
        await engine.dispose()


async def _committed(bootstrap: str, group: str, topic: str, offset: int) -> bool:
    return await fuzz.committed_offset(bootstrap, group, topic) == offset
