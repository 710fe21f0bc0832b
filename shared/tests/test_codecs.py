"""Records compressed by a real client (librdkafka) with every codec Kafka carries are applied; a
record the consumer cannot read is dead-lettered as a trace and the records after it are applied."""

from __future__ import annotations

import aiokafka.codec
import pytest

from cdap_shared import events as ev
from cdap_testing import eventually, librdkafka_produce

from .pipeline import Pipeline
from .samples import SAMPLES
from .test_dead_letters import _applied, _read_dlq

pytestmark = pytest.mark.stack

CODECS = ("gzip", "snappy", "lz4", "zstd")


def sample(subject: str) -> ev.CloudEvent:
    return ev.make_event(
        "identity.user.activated", source="/test", subject=subject, data=SAMPLES["identity.user.activated"]
    )


def produce(kafka: str, topic: str, codec: str, *events: ev.CloudEvent) -> None:
    librdkafka_produce(kafka, topic, codec, [e.to_bytes() for e in events])


async def test_records_of_every_codec_are_applied(pipeline: Pipeline) -> None:
    sent = {codec: [sample(f"{codec}-{i}") for i in range(3)] for codec in CODECS}
    for codec, events in sent.items():
        produce(pipeline.kafka, pipeline.topic, codec, *events)

    effects = await eventually(lambda: _applied(pipeline, 12))
    assert effects == {e.id: 1 for events in sent.values() for e in events}


async def test_an_unreadable_record_is_dead_lettered_and_the_next_ones_applied(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the lz4 codec were missing (what stopped the audit log for good before): the client cannot
    # undo that compression, so those records cannot be read at all.
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)
    before, unreadable, after = sample("before"), [sample("lz4-a"), sample("lz4-b")], sample("after")
    produce(pipeline.kafka, pipeline.topic, "none", before)
    produce(pipeline.kafka, pipeline.topic, "lz4", *unreadable)
    produce(pipeline.kafka, pipeline.topic, "none", after)

    effects = await eventually(lambda: _applied(pipeline, 2), within=60)
    assert effects == {before.id: 1, after.id: 1}
    dead = await _read_dlq(pipeline, 2)
    assert [h["x-original-offset"] for _, h in dead] == ["1", "2"]
    for value, headers in dead:
        assert value == b""
        assert headers["x-original-topic"] == pipeline.topic
        assert headers["x-original-partition"] == "0"
        assert headers["x-error-type"] == "UnsupportedCodecError"
        assert "could not be read" in headers["x-error"]
