"""A record the relay publishes is a structured-mode CloudEvent per the Kafka protocol binding, as the
CNCF CloudEvents SDK reads it (not as binary mode, which a record without `content-type` would be)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from cdap_shared import events as ev

from .pipeline import Pipeline
from .samples import SAMPLES

pytestmark = pytest.mark.stack


async def test_the_sdk_reads_a_published_record_as_the_event(pipeline: Pipeline) -> None:
    event = ev.make_event(
        "identity.user.suspended", source="/identity", subject="u-42", data=SAMPLES["identity.user.suspended"]
    )
    await pipeline.write(event)
    relay = pipeline.start_relay()
    consumer = AIOKafkaConsumer(
        pipeline.topic, bootstrap_servers=pipeline.kafka, auto_offset_reset="earliest"
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
