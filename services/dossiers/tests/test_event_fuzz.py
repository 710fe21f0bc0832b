"""Hostile events on caf.dossiers and identity.events, as dossiers consumes them: dead-lettered, never
a crash, never a read model built from junk.

In-process properties run the projections through the shared consumer against a migrated database;
the last test sends hypothesis-drawn hostile records through Kafka to the running service.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from cdap_cli.caf_feed import make_dossier
from cdap_dossiers import handlers
from cdap_dossiers.config import Settings
from cdap_dossiers.domain import ActiveGrant, DossierFacts, name_key, scope_failure
from cdap_dossiers.policy import load_policy
from cdap_shared import events as ev
from cdap_shared.db import create_engine, session_factory
from cdap_shared.migrations import upgrade_to_head
from cdap_testing import fuzz

from .conftest import POOLS, SERVICE_DIR, Service

pytestmark = pytest.mark.stack

CONSUMED = ["caf.dossier.upserted", *(t for t in fuzz.VALID_DATA if t.startswith("identity."))]
TOPIC = "caf.dossiers"
UPSERTED = "caf.dossier.upserted"

APPLY = handlers.handler(Settings())


@pytest.fixture
async def db(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[AsyncEngine]:
    """A migrated database holding dossier 1234567 and grant g1 (the ones `fuzz.VALID_DATA` names)."""
    url = await make_database()
    await upgrade_to_head(SERVICE_DIR, url)
    engine = create_engine(url, 5)
    seeds = [fuzz.encode(fuzz.envelope(t, fuzz.VALID_DATA[t])) for t in (UPSERTED, "identity.grant.issued")]
    assert await fuzz.feed(session_factory(engine), APPLY, TOPIC, seeds) == {}
    yield engine
    await engine.dispose()


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.bad_payloads(CONSUMED) | fuzz.broken_envelopes(CONSUMED), min_size=1, max_size=8))
async def test_events_with_bad_data_are_dead_lettered_and_change_nothing(
    db: AsyncEngine, batch: list[bytes]
) -> None:
    # Nothing changes: no dossier, grant or suspension touched
    await fuzz.assert_refused_and_unchanged(db, APPLY, TOPIC, batch)


@fuzz.fuzz_settings(max_examples=40)
@given(batch=st.lists(fuzz.awkward_payloads(CONSUMED), min_size=1, max_size=6))
async def test_awkward_events_are_applied_or_dead_lettered_never_a_stall(
    db: AsyncEngine, batch: list[bytes]
) -> None:
    dead = await fuzz.feed(session_factory(db), APPLY, TOPIC, batch)
    applied = await fuzz.claimed(db)
    for offset, raw in enumerate(batch):
        assert (offset in dead) != (fuzz.event_id(raw) in applied), raw[:300]


# The model leaves `sections` free-form; the projection reads a few fields out of it to index them.
section_junk = st.fixed_dictionaries(
    {},
    optional={
        "family_name": fuzz.hostile_values,
        "given_name": fuzz.hostile_values,
        "birth_date": fuzz.hostile_values | st.sampled_from(["1985-05-01", "2026-02-29", "01/05/1985"]),
        "telephone": fuzz.hostile_values,
        "postal_code": fuzz.hostile_values,
    },
)
junk_sections = st.fixed_dictionaries(
    {},
    optional={
        "identite": section_junk | fuzz.hostile_values,
        "contact": section_junk,
        "adresse": section_junk,
    },
)


@fuzz.fuzz_settings(max_examples=200)
@given(sections=junk_sections)
def test_the_read_model_keeps_what_the_feed_says_or_refuses_the_dossier(sections: dict[str, Any]) -> None:
    data = ev.DossierUpserted.model_validate(fuzz.VALID_DATA[UPSERTED] | {"sections": sections})
    try:
        row = handlers.dossier_row(data)
    except ValueError as exc:  # the consumer dead-letters it
        assert fuzz.NIR not in str(exc)
        for section in sections.values():
            birth = section.get("birth_date") if isinstance(section, dict) else None
            if isinstance(birth, str) and len(birth) >= 6:
                assert birth not in str(exc)  # no personal data in the DLQ headers
        return
    identite = sections.get("identite") or {}
    # Never a name made up from something else ("None", "{'a': 1}"): T3/T4 lookups match on it.
    assert row["family_name"] == (identite.get("family_name") or "")
    assert row["given_name"] == (identite.get("given_name") or "")
    assert row["family_name_key"] == name_key(row["family_name"])
    assert row["postal_code"] is None or isinstance(row["postal_code"], str)


@fuzz.fuzz_settings(max_examples=100)
@given(
    feed_name=st.sampled_from(["", "-", " "]) | fuzz.odd_strings,
    asked=st.text(" -'\u2019.\u0301", min_size=1),
)
def test_a_name_with_nothing_comparable_never_matches_a_dossier(feed_name: str, asked: str) -> None:
    # The feed may send a dossier without a family name (the model leaves sections free-form): a T3/T4
    # lookup with family_name="-" used to match it, both names reducing to "".
    facts = DossierFacts(numero="1234567", department="76", opposition=False, family_name=feed_name)
    grant = ActiveGrant(id="g1", profile="T3", department="76", organisation_id="o1", organisation_siret="1")
    assert scope_failure(load_policy().profiles["T3"], grant, facts, asked) == "identity_mismatch"


@fuzz.ONE_DRAW
@given(hostile=fuzz.hostile_batch(CONSUMED))
async def test_the_running_service_dead_letters_hostile_records_and_keeps_the_next_dossier(
    service_factory: Callable[..., Awaitable[Service]], hostile: list[fuzz.Hostile]
) -> None:
    svc = await service_factory()
    data = make_dossier(random.Random(5), POOLS, "7654321", "76")
    upserted = ev.make_event(UPSERTED, source="/caf", subject="7654321", data=data)
    topic, bootstrap = svc.settings.caf_topic, svc.settings.kafka_bootstrap
    await fuzz.publish(bootstrap, topic, [*hostile, fuzz.Hostile(upserted.to_bytes())])

    await svc.wait_for_dossiers(1)
    letters = await fuzz.read_dead_letters(bootstrap, topic, len(hostile))
    assert [letter.value for letter in letters] == [record.value for record in hostile]
    assert all(set(fuzz.DLQ_HEADERS) <= set(letter.headers) for letter in letters)
    # Alive: the group committed past the valid event.
    await eventually_committed(svc, topic, len(hostile) + 1)
    assert (await svc.client.get("/health")).status_code == 200


async def eventually_committed(svc: Service, topic: str, offset: int) -> None:
    from cdap_testing import eventually

    async def committed() -> bool:
        group = svc.settings.consumer_group
        return await fuzz.committed_offset(svc.settings.kafka_bootstrap, group, topic) == offset

    await eventually(committed)
