"""The broker's own defences (issue 15): SASL/SCRAM-SHA-512 on every connection and ACLs per principal.

Tried as an attacker would, on the real topics of the local stack. Every attempt here is refused before
anything is written, so the long-lived topics are left as they were (checked by their end offsets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from cdap_shared import events as ev
from cdap_shared.envelope import new_event_id
from cdap_shared.kafka_access import CAF_FEED, PRINCIPALS, KafkaLogin, local_credentials

pytestmark = pytest.mark.stack


def login(principal: str) -> KafkaLogin:
    env = local_credentials(principal)
    if not env:
        pytest.fail(f"the local stack has no password for {principal}: run `make up` (it secures Kafka)")
    return KafkaLogin(env["CDAP_KAFKA_USERNAME"], env["CDAP_KAFKA_PASSWORD"])


@asynccontextmanager
async def producer(kafka: str, options: dict[str, Any]) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(
        bootstrap_servers=kafka, enable_idempotence=True, acks="all", request_timeout_ms=10_000, **options
    )
    try:
        await client.start()
        yield client
    finally:
        await client.stop()


async def end_offsets(kafka: str, topic: str) -> dict[TopicPartition, int]:
    """As the test principal, which may read everything."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await consumer.start()
    try:
        return await consumer.end_offsets(
            [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        )
    finally:
        await consumer.stop()


def forged_consultation() -> bytes:
    data = ev.DossierConsulted(
        actor="forged-user", numero="1000001", motif="accompagnement_social", decision="granted"
    )
    return ev.make_event("dossier.consulted", source="/forged", subject="1000001", data=data).to_bytes()


@pytest.mark.parametrize("options", [{}, {"sasl_plain_password": "not-the-password"}], ids=["none", "wrong"])
async def test_a_client_without_valid_credentials_is_refused(
    stack: dict[str, str], options: dict[str, Any]
) -> None:
    credentials = {**login("cdap-dossiers").options(), **options} if options else {}
    with pytest.raises(KafkaConnectionError):
        async with producer(stack["kafka"], credentials):
            pass


async def test_the_dossiers_principal_cannot_write_identity_events(stack: dict[str, str]) -> None:
    before = await end_offsets(stack["kafka"], "identity.events")
    async with producer(stack["kafka"], login("cdap-dossiers").options()) as dossiers:
        with pytest.raises(TopicAuthorizationFailedError):
            await dossiers.send_and_wait(
                "identity.events", b'{"type": "identity.user.suspended"}', key=b"u-1"
            )
    assert await end_offsets(stack["kafka"], "identity.events") == before


@pytest.mark.parametrize("principal", ["cdap-identity", "cdap-audit", CAF_FEED])
async def test_a_forged_consultation_is_refused_by_the_broker(stack: dict[str, str], principal: str) -> None:
    """Only dossiers may write `dossier.consultations`: another principal cannot make audit log a
    consultation that never happened."""
    before = await end_offsets(stack["kafka"], "dossier.consultations")
    async with producer(stack["kafka"], login(principal).options()) as forger:
        with pytest.raises(TopicAuthorizationFailedError):
            await forger.send_and_wait("dossier.consultations", forged_consultation(), key=b"1000001")
    assert await end_offsets(stack["kafka"], "dossier.consultations") == before


@pytest.mark.parametrize("principal", [p.name for p in PRINCIPALS if "caf.dossiers" not in p.consumes])
async def test_only_dossiers_reads_the_caf_feed(stack: dict[str, str], principal: str) -> None:
    """`caf.dossiers` carries NIRs: the CAF feed writes it, dossiers reads it, nobody else can."""
    consumer = AIOKafkaConsumer(
        "caf.dossiers",
        bootstrap_servers=stack["kafka"],
        auto_offset_reset="earliest",
        **login(principal).options(),
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):  # at start (no Describe) or at the first fetch
            await consumer.start()
            await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()


async def test_a_service_joins_only_its_own_consumer_groups(stack: dict[str, str]) -> None:
    async def first_poll(group: str) -> None:
        consumer = AIOKafkaConsumer(
            "caf.dossiers",
            bootstrap_servers=stack["kafka"],
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **login("cdap-dossiers").options(),
        )
        try:
            await consumer.start()
            await consumer.getmany(timeout_ms=3000)
        finally:
            await consumer.stop()

    await first_poll(f"dossiers-acl-{new_event_id()[-8:]}")  # its own: allowed, nothing committed
    with pytest.raises(GroupAuthorizationFailedError):
        await first_poll("audit")


def test_each_topic_has_exactly_one_writer_among_the_principals() -> None:
    """A new topic needs its owner in `PRINCIPALS`; no two principals may write the same topic."""
    owners = Counter(topic for p in PRINCIPALS for topic in p.owns)
    assert owners == dict.fromkeys(ev.TOPICS, 1)
    assert {topic for p in PRINCIPALS for topic in p.consumes} <= set(ev.TOPICS)
