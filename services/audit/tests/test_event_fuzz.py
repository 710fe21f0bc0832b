"""Hostile events on every topic audit consumes: dead-lettered, never a crash, never a log entry.

In-process properties run the ingestor through the shared consumer against a migrated database (the
Merkle log included); the last test sends hypothesis-drawn hostile records through Kafka to the
running service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cdap_audit.ingest import Ingestor
from cdap_audit.rules import load_rules
from cdap_shared.db import create_engine, session_factory
from cdap_shared.migrations import upgrade_to_head
from cdap_testing import eventually, fuzz

from .conftest import SERVICE_DIR, Audit, consulted

pytestmark = pytest.mark.stack

CONSUMED = [t for t in fuzz.VALID_DATA if t.split(".")[0] in ("identity", "access", "dossier")]
CONSUMED.append("audit.alert.raised")
TOPIC = "dossier.consultations"


def ingestor() -> Ingestor:
    return Ingestor(load_rules(), "audit.alerts.fuzz")


@pytest.fixture
async def db(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[AsyncEngine]:
    """A migrated audit database whose log already holds one entry per consumed type."""
    url = await make_database()
    await upgrade_to_head(SERVICE_DIR, url)
    engine = create_engine(url, 5)
    seeds = [fuzz.encode(fuzz.envelope(t, fuzz.VALID_DATA[t])) for t in CONSUMED]
    assert await fuzz.feed(session_factory(engine), ingestor(), TOPIC, seeds, batched=True) == {}
    yield engine
    await engine.dispose()


async def tree_size(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT size FROM tree_state WHERE id = 1"))).scalar_one())


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.bad_payloads(CONSUMED) | fuzz.broken_envelopes(CONSUMED), min_size=1, max_size=8))
async def test_events_with_bad_data_are_dead_lettered_and_change_nothing(
    db: AsyncEngine, batch: list[bytes]
) -> None:
    # Nothing changes: no entry, node, alert or tree size change
    await fuzz.assert_refused_and_unchanged(db, ingestor(), TOPIC, batch, batched=True)


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.awkward_payloads(CONSUMED), min_size=1, max_size=6))
async def test_awkward_events_are_logged_or_dead_lettered_and_the_tree_stays_whole(
    db: AsyncEngine, batch: list[bytes]
) -> None:
    size = await tree_size(db)
    dead = await fuzz.feed(session_factory(db), ingestor(), TOPIC, batch, batched=True)
    applied = await fuzz.claimed(db)
    logged = [raw for offset, raw in enumerate(batch) if offset not in dead]
    for offset, raw in enumerate(batch):
        assert (offset in dead) != (fuzz.event_id(raw) in applied), raw[:300]
    # Each event that got in is one leaf more, with its row: no gap, no leaf without an entry.
    assert await tree_size(db) == size + len({fuzz.event_id(raw) for raw in logged})
    async with db.connect() as conn:
        entries = (await conn.execute(text("SELECT count(*), max(leaf_index) FROM entry"))).one()
    assert tuple(entries) == (size + len({fuzz.event_id(raw) for raw in logged}), await tree_size(db) - 1)


@fuzz.ONE_DRAW
@given(hostile=fuzz.hostile_batch(CONSUMED))
async def test_the_running_service_dead_letters_hostile_records_and_logs_the_next_consultation(
    audit: Audit, hostile: list[fuzz.Hostile]
) -> None:
    event = consulted()
    topic, bootstrap = audit.settings.consultations_topic, audit.settings.kafka_bootstrap
    await fuzz.publish(bootstrap, topic, [*hostile, fuzz.Hostile(event.to_bytes())])

    [entry] = await audit.wait_for_entries(1)
    assert entry["event_id"] == event.id
    letters = await fuzz.read_dead_letters(bootstrap, topic, len(hostile))
    assert [letter.value for letter in letters] == [record.value for record in hostile]
    assert all(set(fuzz.DLQ_HEADERS) <= set(letter.headers) for letter in letters)
    # Alive: the group committed past the valid event.
    await eventually(lambda: _committed(audit, topic, len(hostile) + 1))
    assert (await audit.client.get("/health")).status_code == 200


async def _committed(audit: Audit, topic: str, offset: int) -> bool:
    group = audit.settings.consumer_group
    return await fuzz.committed_offset(audit.settings.kafka_bootstrap, group, topic) == offset
