"""Poison messages go to `<topic>.dlq` with their error; the consumer goes on with the next ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_shared import events as ev
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import make_producer
from cdap_testing import eventually

from .pipeline import Pipeline, build_pipeline, close_pipeline, record_effect
from .samples import SAMPLES

pytestmark = pytest.mark.stack

NIR = "185057800608436"


async def refuse_suspensions(session: AsyncSession, event: ev.CloudEvent) -> None:
    """A handler with a bug for one event type: it always fails on it."""
    if event.type == "identity.user.suspended":
        raise LookupError("no such organisation")
    await record_effect(session, event)


@pytest.fixture
async def pipeline(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
) -> AsyncIterator[Pipeline]:
    p = await build_pipeline(stack, make_database, make_topic, handler=refuse_suspensions)
    yield p
    await close_pipeline(p)


def sample(event_type: str) -> ev.CloudEvent:
    return ev.make_event(event_type, source="/test", subject="u-1", data=SAMPLES[event_type])


async def test_poison_messages_are_dead_lettered_and_the_rest_is_applied(pipeline: Pipeline) -> None:
    good_before, good_after = sample("identity.user.activated"), sample("identity.user.reinstated")
    failing = sample("identity.user.suspended")
    bad_payload = ev.CloudEvent(type="caf.dossier.upserted", source="/t", subject="1", data={"nir": NIR})
    producer = make_producer(pipeline.kafka)
    await producer.start()
    try:
        for value in (
            good_before.to_bytes(),
            b"\x00\xffnot json at all",
            bad_payload.to_bytes(),
            failing.to_bytes(),
            good_after.to_bytes(),
        ):
            await producer.send_and_wait(pipeline.topic, value, key=b"u-1")
    finally:
        await producer.stop()

    effects = await eventually(lambda: _applied(pipeline, 2))
    assert effects == {good_before.id: 1, good_after.id: 1}

    dead = await _read_dlq(pipeline, 3)
    assert [value for value, _ in dead] == [
        b"\x00\xffnot json at all",
        bad_payload.to_bytes(),
        failing.to_bytes(),
    ]
    for _, headers in dead:
        assert headers["x-original-topic"] == pipeline.topic
        assert headers["x-consumer-group"] == f"group-{pipeline.topic}"
        assert headers["x-error"]
    assert dead[2][1]["x-error-type"] == "LookupError"
    assert "no such organisation" in dead[2][1]["x-error"]
    # The error text names the bad field but never repeats its value.
    assert NIR not in dead[1][1]["x-error"] and "numero" in dead[1][1]["x-error"]


async def _applied(p: Pipeline, n: int) -> dict[str, int] | None:
    effects = await p.effects()
    return effects if len(effects) >= n else None


async def _read_dlq(p: Pipeline, n: int) -> list[tuple[bytes, dict[str, str]]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        f"{p.topic}.dlq",
        bootstrap_servers=p.kafka,
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[tuple[bytes, dict[str, str]]] = []
    try:
        for _ in range(100):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out += [(r.value, {k: v.decode() for k, v in r.headers}) for r in records]
            if len(out) >= n:
                break
    finally:
        await consumer.stop()
    out.sort(key=lambda item: int(item[1]["x-original-offset"]))
    return out
