"""Hostile events on identity's topics (access.events, audit.alerts): dead-lettered, never a crash.

In-process properties run identity's real handler through the shared consumer against a migrated
database; the last test sends hypothesis-drawn hostile records through Kafka to the running service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from cdap_identity import handlers
from cdap_identity.config import Settings
from cdap_identity.models import Organisation
from cdap_shared import events as ev
from cdap_shared.db import create_engine, session_factory
from cdap_shared.migrations import upgrade_to_head
from cdap_testing import eventually, fuzz

from .conftest import SERVICE_DIR, Identity, unique_email

pytestmark = pytest.mark.stack

CONSUMED = [t for t in fuzz.VALID_DATA if t.startswith("access.") or t == "audit.alert.raised"]
TOPIC = "access.events"


@pytest.fixture
async def db(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[AsyncEngine]:
    """A migrated identity database that knows organisation `o1` (the one `fuzz.VALID_DATA` names),
    so that payloads reach provisioning rather than stopping at an unknown organisation."""
    url = await make_database()
    await upgrade_to_head(SERVICE_DIR, url)
    engine = create_engine(url, 5)
    async with session_factory(engine)() as session, session.begin():
        session.add(
            Organisation(
                id="o1",
                siret="73282932000074",
                name="Logeo Seine",
                kind="bailleur",
                department="76",
                convention_reference="CONV-76-001",
                convention_valid_until=date(2030, 12, 31),
            )
        )
    yield engine
    await engine.dispose()


def handler() -> fuzz.Handler:
    return handlers.handler(Settings(portal_url="http://portal.invalid"))


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.bad_payloads(CONSUMED) | fuzz.broken_envelopes(CONSUMED), min_size=1, max_size=8))
async def test_events_with_bad_data_are_dead_lettered_and_change_nothing(
    db: AsyncEngine, batch: list[bytes]
) -> None:
    # Nothing changes: no account, grant, mail or event staged
    await fuzz.assert_refused_and_unchanged(db, handler(), TOPIC, batch)


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.awkward_payloads(CONSUMED), min_size=1, max_size=6))
async def test_awkward_events_are_applied_or_dead_lettered_never_a_stall(
    db: AsyncEngine, batch: list[bytes]
) -> None:
    # NUL characters, 20,000-character strings, 2**64: valid per the model, so identity may apply them
    # (an account and grant) or fail on them (PostgreSQL refuses the value); it must not stop.
    dead = await fuzz.feed(session_factory(db), handler(), TOPIC, batch)
    applied = await fuzz.claimed(db)
    for offset, raw in enumerate(batch):
        assert (offset in dead) != (fuzz.event_id(raw) in applied), raw[:300]


@fuzz.ONE_DRAW
@given(hostile=fuzz.hostile_batch(CONSUMED))
async def test_the_running_service_dead_letters_hostile_records_and_provisions_the_next_request(
    idp: Identity, hostile: list[fuzz.Hostile]
) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    approved = ev.make_event(
        "access.request.approved",
        source="/test",
        subject="req-fuzz",
        data=ev.RequestApproved(
            request_id="req-fuzz",
            organisation_id=org["id"],
            profile="T2",
            department="76",
            valid_until=date.today() + timedelta(days=200),
            by="manager-1",
            applicant=ev.Applicant(
                family_name="Petit", given_name="Jules", email=unique_email("jules"), job_title="Gestionnaire"
            ),
        ),
    )
    topic = idp.settings.access_topic
    await fuzz.publish(idp.settings.kafka_bootstrap, topic, [*hostile, fuzz.Hostile(approved.to_bytes())])

    [grant] = await eventually(lambda: idp.outbox("identity.grant.issued"), within=30)
    assert grant.data["request_id"] == "req-fuzz"
    letters = await fuzz.read_dead_letters(idp.settings.kafka_bootstrap, topic, len(hostile))
    assert [letter.value for letter in letters] == [record.value for record in hostile]
    assert all(set(fuzz.DLQ_HEADERS) <= set(letter.headers) for letter in letters)
    # Alive: the group committed past the valid event.
    await eventually(lambda: _committed(idp, topic, len(hostile) + 1))
    assert (await idp.client.get("/health")).status_code == 200


async def _committed(idp: Identity, topic: str, offset: int) -> bool:
    return (
        await fuzz.committed_offset(idp.settings.kafka_bootstrap, idp.settings.consumer_group, topic)
        == offset
    )
