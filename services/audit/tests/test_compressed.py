"""Consultations that a real client (kcat) compressed with each of Kafka's codecs are logged."""

from __future__ import annotations

import pytest

from cdap_shared.testing import kcat_produce

from .conftest import Audit, consulted

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_consultations_are_logged(audit: Audit, codec: str) -> None:
    events = [consulted(f"actor-{codec}", f"{2000000 + i:07d}") for i in range(5)]
    kcat_produce(
        audit.settings.kafka_bootstrap,
        audit.settings.consultations_topic,
        codec,
        [e.to_bytes() for e in events],
    )

    entries = await audit.wait_for_entries(len(events))
    assert sorted(e["event_id"] for e in entries) == sorted(e.id for e in events)
