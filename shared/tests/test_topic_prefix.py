"""A test run puts its events on topics of its own (`CDAP_TOPIC_PREFIX`), so a system left running on
the plain topic names (`make run`) never sees them."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.settings import ServiceSettings
from cdap_shared.topics import all_topics, named, prefix
from cdap_testing import eventually

from .pipeline import Pipeline
from .samples import SAMPLES
from .test_kafka_access import end_offsets as ends

pytestmark = pytest.mark.stack

RUNNING_SYSTEM_TOPIC = "dossier.consultations"  # the name `make run` uses


class _Settings(ServiceSettings):
    consultations_topic: str = RUNNING_SYSTEM_TOPIC
    identity_topic: str = "identity.events"
    consumer_group: str = "dossiers"


def test_the_run_names_every_default_topic_and_group_with_its_own_prefix() -> None:
    assert prefix().startswith("test-")
    settings = _Settings(identity_topic="identity.events.t1")
    assert settings.consultations_topic == f"{prefix()}{RUNNING_SYSTEM_TOPIC}"
    assert settings.consumer_group == f"{prefix()}dossiers"
    assert settings.identity_topic == "identity.events.t1"  # a name given explicitly is kept
    assert all(topic.startswith(prefix()) for topic in all_topics())


async def values_since(kafka: str, since: dict[TopicPartition, int]) -> list[bytes]:
    """The records' values written after `since` (up to the end offsets as they are now); others' runs
    may write anything there, events or not."""
    until = await ends(kafka, next(iter(since)).topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await consumer.start()
    values: list[bytes] = []
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        behind = list(since)
        while behind:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value or b"" for r in records]
            behind = [tp for tp in behind if await consumer.position(tp) < until[tp]]
    finally:
        await consumer.stop()
    return values


async def test_a_sample_event_reaches_the_runs_topic_and_not_the_running_systems(pipeline: Pipeline) -> None:
    kafka = pipeline.kafka
    running_before = await ends(kafka, RUNNING_SYSTEM_TOPIC)
    assert running_before, "the local stack's topics exist (`make up`)"
    run_before = await ends(kafka, named(RUNNING_SYSTEM_TOPIC))
    event = ev.make_event(
        "dossier.consulted", source="/test", subject="1000001", data=SAMPLES["dossier.consulted"]
    )
    async with pipeline.producer_sessions() as session, session.begin():
        await outbox.add(session, event)  # the topic of its type, as the dossiers service stages it
    pipeline.start_relay()

    async def on_the_runs_topic() -> bool:
        return event.to_bytes() in await values_since(kafka, run_before)

    await eventually(on_the_runs_topic)
    assert event.to_bytes() not in await values_since(kafka, running_before)
