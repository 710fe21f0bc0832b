"""Hostile events on identity.events, as access-requests consumes them: dead-lettered, never a crash.

In-process properties run the service's real handler through the shared consumer against a migrated
database; the last test sends hypothesis-drawn hostile records through Kafka to the running service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cdap_access import projections
from cdap_access.config import Settings
from cdap_access.models import PartnerOrganisation
from cdap_shared import events as ev
from cdap_shared.db import create_engine, session_factory
from cdap_shared.migrations import upgrade_to_head
from cdap_testing import eventually, fuzz

from .conftest import ORG, SERVICE_DIR, Service

pytestmark = pytest.mark.stack

CONSUMED = [t for t in fuzz.VALID_DATA if t.startswith("identity.")]
TOPIC = "identity.events"


@pytest.fixture
async def db(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[AsyncEngine, fuzz.Handler]]:
    """A migrated database, its handler, and what the payloads refer to: organisation `o1` and grant
    `g1` (from `fuzz.VALID_DATA`), applied through the handler itself, as identity's events would."""
    url = await make_database()
    await upgrade_to_head(SERVICE_DIR, url)
    engine = create_engine(url, 5)
    handler = projections.handler(Settings(database_url=url))
    seeds = [
        fuzz.encode(fuzz.envelope(t, fuzz.VALID_DATA[t]))
        for t in ("identity.organisation.registered", "identity.grant.issued")
    ]
    assert await fuzz.feed(session_factory(engine), handler, TOPIC, seeds) == {}
    yield engine, handler
    await engine.dispose()


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.bad_payloads(CONSUMED) | fuzz.broken_envelopes(CONSUMED), min_size=1, max_size=8))
async def test_events_with_bad_data_are_dead_lettered_and_change_nothing(
    db: tuple[AsyncEngine, fuzz.Handler], batch: list[bytes]
) -> None:
    engine, handler = db
    # Nothing changes: no organisation, grant or request touched.
    await fuzz.assert_refused_and_unchanged(engine, handler, TOPIC, batch)


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.awkward_payloads(CONSUMED), min_size=1, max_size=6))
async def test_awkward_events_are_applied_or_dead_lettered_never_a_stall(
    db: tuple[AsyncEngine, fuzz.Handler], batch: list[bytes]
) -> None:
    # NUL characters, 20,000-character strings, 2**64: valid per the model, so the projections may
    # keep them or PostgreSQL may refuse them (dead letter); the consumer must not stop on them.
    engine, handler = db
    dead = await fuzz.feed(session_factory(engine), handler, TOPIC, batch)
    applied = await fuzz.claimed(engine)
    for offset, raw in enumerate(batch):
        assert (offset in dead) != (fuzz.event_id(raw) in applied), raw[:300]


@fuzz.ONE_DRAW
@given(hostile=fuzz.hostile_batch(CONSUMED))
async def test_the_running_service_dead_letters_hostile_records_and_learns_the_next_organisation(
    svc_without_organisation: Service, hostile: list[fuzz.Hostile]
) -> None:
    svc = svc_without_organisation
    registered = ev.make_event(
        "identity.organisation.registered",
        source="/cdap/identity",
        subject=ORG,
        data=ev.OrganisationRegistered.model_validate(
            fuzz.VALID_DATA["identity.organisation.registered"] | {"organisation_id": ORG}
        ),
    )
    topic, bootstrap = svc.settings.identity_topic, svc.settings.kafka_bootstrap
    await fuzz.publish(bootstrap, topic, [*hostile, fuzz.Hostile(registered.to_bytes())])

    async def known() -> bool:
        async with svc.app.state.sessions() as session:
            return (
                await session.scalar(
                    select(PartnerOrganisation).where(PartnerOrganisation.organisation_id == ORG)
                )
                is not None
            )  # type: ignore[arg-type]

    await eventually(known, within=30)
    letters = await fuzz.read_dead_letters(bootstrap, topic, len(hostile))
    assert [letter.value for letter in letters] == [record.value for record in hostile]
    assert all(set(fuzz.DLQ_HEADERS) <= set(letter.headers) for letter in letters)
    # Alive: the group committed past the valid event.
    await eventually(lambda: _committed(svc, topic, len(hostile) + 1))
    assert (await svc.client.get("/health")).status_code == 200


async def _committed(svc: Service, topic: str, offset: int) -> bool:
    committed = await fuzz.committed_offset(svc.settings.kafka_bootstrap, svc.settings.consumer_group, topic)
    return committed == offset
