"""Outages: without Kafka lookups still work and are delivered later; without PostgreSQL nothing leaves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cdap_cli.caf_feed import make_dossier
from cdap_dossiers import handlers
from cdap_shared import events as ev
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.topics import named
from cdap_testing import eventually

from .conftest import POOLS, Service

pytestmark = pytest.mark.stack

NOWHERE = "127.0.0.1:1"  # nothing listens there


async def seed(svc: Service, numero: str, user: str) -> dict[str, str]:
    """Fill the projections directly through the same handlers the consumer uses (Kafka is down)."""
    import random

    dossier = make_dossier(random.Random(5), POOLS, numero, "76").model_copy(update={"opposition": False})
    grant = ev.GrantIssued(
        grant_id=f"g-{user}",
        user_id=user,
        organisation_id="o",
        organisation_siret="73282932000074",
        profile="T1",
        department="76",
        valid_from=date.today() - timedelta(days=1),
        valid_until=date.today() + timedelta(days=30),
    )
    apply = handlers.handler(svc.settings)
    async with svc.app.state.sessions() as session, session.begin():
        for event_type, subject, data in (
            ("caf.dossier.upserted", numero, dossier),
            ("identity.grant.issued", user, grant),
        ):
            await apply(session, ev.make_event(event_type, source="/t", subject=subject, data=data))
    return {"id": grant.grant_id, "profile": "T1", "department": "76"}


async def end_offsets(kafka: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka, **KafkaLogin.from_env().options()
    )  # subscribing fetches its metadata
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        assert partitions, f"topic {topic} has no partitions"
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def ids_since(kafka: str, offsets: dict[TopicPartition, int]) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        found: list[str] = []
        for _ in range(10):
            batch = await consumer.getmany(timeout_ms=200)
            found += [ev.CloudEvent.from_bytes(r.value).id for rs in batch.values() for r in rs]
        return found
    finally:
        await consumer.stop()


async def test_lookup_works_while_kafka_is_down_and_is_delivered_once_it_is_back(
    service_factory: Callable[..., Awaitable[Service]], stack: dict[str, str]
) -> None:
    down = await service_factory(kafka_bootstrap=NOWHERE)
    grant = await seed(down, "1000010", "kim")
    r = await down.client.get(
        "/v1/dossiers/1000010", params={"motif": "accompagnement_social"}, headers=down.token("kim", [grant])
    )
    assert r.status_code == 200 and r.json()["sections"]
    audit_id = r.headers["X-Audit-Id"]
    assert (await down.client.get("/ready")).status_code == 503

    before = await end_offsets(stack["kafka"], named("dossier.consultations"))
    # Kafka is back: the service restarts against it, with the same database.
    back = await service_factory(database_url=down.settings.database_url)

    async def delivered() -> list[str]:
        return [i for i in await ids_since(stack["kafka"], before) if i == audit_id]

    assert await eventually(delivered, within=20) == [audit_id]
    await eventually(lambda: _ready(back), within=20)


async def _ready(svc: Service) -> bool:
    return (await svc.client.get("/ready")).status_code == 200


async def test_no_data_leaves_while_postgresql_is_unreachable(
    service_factory: Callable[..., Awaitable[Service]],
) -> None:
    svc = await service_factory(database_url="postgresql+asyncpg://cdap:cdap@127.0.0.1:1/cdap_dossiers")
    grant = {"id": "g-lea", "profile": "T1", "department": "76"}
    r = await svc.client.get(
        "/v1/dossiers/1000011", params={"motif": "accompagnement_social"}, headers=svc.token("lea", [grant])
    )
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "sections" not in r.json() and "X-Audit-Id" not in r.headers
    search = await svc.client.post(
        "/v1/dossiers/search",
        json={"motif": "accompagnement_social", "family_name": "Martin"},
        headers=svc.token("lea", [grant]),
    )
    assert search.status_code == 503
    ready = await svc.client.get("/ready")
    assert ready.status_code == 503 and "database" in ready.json()["failed"]
