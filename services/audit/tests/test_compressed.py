"""Consultations that a real client (librdkafka) compressed with each of Kafka's codecs are logged."""

from __future__ import annotations

import pytest

from cdap_testing import eventually, librdkafka_produce

from .conftest import Audit, consulted

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_consultations_are_logged(audit: Audit, codec: str) -> None:
    events = [consulted(f"actor-{codec}", f"{2000000 + i:07d}") for i in range(5)]
    librdkafka_produce(
        audit.settings.kafka_bootstrap,
        audit.settings.consultations_topic,
        codec,
        [e.to_bytes() for e in events],
    )

    entries = await audit.wait_for_entries(len(events))
    assert sorted(e["event_id"] for e in entries) == sorted(e.id for e in events)


async def test_metrics_show_what_the_consumer_received(audit: Audit) -> None:
    events = [consulted("actor-metrics", f"{2100000 + i:07d}") for i in range(3)]
    await audit.publish(*events)
    await audit.wait_for_entries(len(events))

    metrics = (await audit.client.get("/metrics")).text
    topic = audit.settings.consultations_topic
    received = [
        line
        for line in metrics.splitlines()
        if line.startswith("faststream_received_messages_total")
        and f'app_name="{audit.settings.service_name}"' in line
        and topic in line
    ]
    assert received and float(received[0].split()[-1]) >= 1

    # The consumer's lag per partition, sampled every few seconds (zero: it has caught up).
    lag = f'cdap_consumer_lag{{group="{audit.settings.consumer_group}",partition="0",topic="{topic}"}} 0.0'

    async def lag_shown() -> bool:
        return lag in (await audit.client.get("/metrics")).text

    assert await eventually(lag_shown)
