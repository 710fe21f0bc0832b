"""A record the relay publishes is a structured-mode CloudEvent per the Kafka protocol binding, as the
CNCF CloudEvents SDK reads it (not as binary mode, which a record without `content-type` would be)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from cdap_shared import events as ev
from cdap_shared.envelope import STRUCTURED_CONTENT_TYPE
from cdap_shared.kafka_access import MECHANISM, KafkaLogin

from .pipeline import Pipeline
from .samples import SAMPLES

pytestmark = pytest.mark.stack


def suspended(user: str) -> ev.CloudEvent:
    return ev.make_event(
        "identity.user.suspended", source="/identity", subject=user, data=SAMPLES["identity.user.suspended"]
    )


async def test_the_sdk_reads_a_published_record_as_the_event(pipeline: Pipeline) -> None:
    event = suspended("u-42")
    await pipeline.write(event)
    relay = pipeline.start_relay()
    consumer = AIOKafkaConsumer(
        pipeline.topic,
        bootstrap_servers=pipeline.kafka,
        auto_offset_reset="earliest",
        **KafkaLogin.from_env().options(),
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
        relay.stop()

    headers = {k: v for k, v in record.headers}
    assert headers["content-type"] == b"application/cloudevents+json"
    read = from_kafka(KafkaMessage(headers=headers, key=record.key, value=record.value), JSONFormat())
    assert read.get_id() == event.id
    assert read.get_type() == "identity.user.suspended"
    assert read.get_subject() == "u-42"
    assert read.get_data() == event.data


def _read_with_librdkafka(kafka: str, topic: str, expect: int) -> list[tuple[bytes, dict[str, bytes], bytes]]:
    """(key, headers, value) of the first `expect` records, read by librdkafka (confluent-kafka), a
    client that shares no code with the relay's aiokafka."""
    from confluent_kafka import Consumer

    login = KafkaLogin.from_env()
    config: dict[str, str | bool] = {
        "bootstrap.servers": kafka,
        "group.id": f"reader-{topic}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if login.username:
        config |= {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": MECHANISM,
            "sasl.username": login.username,
            "sasl.password": login.password or "",
        }
    consumer = Consumer(config)
    consumer.subscribe([topic])
    seen: list[tuple[bytes, dict[str, bytes], bytes]] = []
    try:
        for _ in range(100):
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                seen.append((message.key(), dict(message.headers() or []), message.value()))
            if len(seen) >= expect:
                break
    finally:
        consumer.close()
    return seen


async def test_each_record_the_relay_publishes_carries_its_key_and_binding_headers(
    pipeline: Pipeline,
) -> None:
    events = [suspended(f"u-{i}") for i in range(3)]
    await pipeline.write(*events)
    relay = pipeline.start_relay()
    try:
        records = await asyncio.to_thread(_read_with_librdkafka, pipeline.kafka, pipeline.topic, len(events))
    finally:
        relay.stop()

    by_id = {ev.CloudEvent.from_bytes(value).id: (key, headers) for key, headers, value in records}
    assert set(by_id) == {e.id for e in events}
    for event in events:
        key, headers = by_id[event.id]
        assert key == event.subject.encode()
        assert headers["content-type"] == STRUCTURED_CONTENT_TYPE.encode()
