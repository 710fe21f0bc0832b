"""The `cdap` command as an operator runs it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from cdap_shared import events as ev
from cdap_shared.identifiers import is_nir
from cdap_shared.kafka_access import KafkaLogin

CDAP = str(Path(sys.executable).with_name("cdap"))


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        CDAP, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.stack
async def test_generate_publishes_valid_dossiers_keyed_by_numero(
    stack: dict[str, str], make_topic: Callable[[str], Awaitable[str]]
) -> None:
    topic = await make_topic("caf.dossiers")
    code, out = await run(
        "dossiers",
        "generate",
        "--count",
        "300",
        "--department",
        "2A",
        "--seed",
        "4",
        "--topic",
        topic,
        "--bootstrap",
        stack["kafka"],
    )
    assert code == 0, out
    assert "published 300 dossiers" in out
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack["kafka"],
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    records = []
    try:
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            records += [r for rs in batch.values() for r in rs]
            if len(records) >= 300:
                break
    finally:
        await consumer.stop()
    assert len(records) == 300
    numeros = set()
    for record in records:
        event = ev.CloudEvent.from_bytes(record.value)
        data = ev.parse_data(event)
        assert isinstance(data, ev.DossierUpserted)
        assert event.type == "caf.dossier.upserted" and record.key == data.numero.encode()
        assert data.department == "2A" and is_nir(data.nir) and data.nir[5:7] == "2A"
        members = data.sections["foyer"]["members"]
        assert members[0]["role"] == "allocataire" and data.sections["foyer"]["children"] == sum(
            m["role"] == "enfant" for m in members
        )
        numeros.add(data.numero)
    assert len(numeros) == 300


async def test_errors_say_what_to_do() -> None:
    code, out = await run("dossiers", "generate", "--count", "5", "--bootstrap", "127.0.0.1:1")
    assert code == 1 and "make up" in out
    code, out = await run("dossiers", "generate", "--count", "0")
    assert code == 2


@pytest.mark.stack
async def test_lag_shows_how_far_behind_each_group_is(
    stack: dict[str, str], make_topic: Callable[[str], Awaitable[str]]
) -> None:
    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    topic = await make_topic("lagging")
    login = KafkaLogin.from_env().options()
    producer = AIOKafkaProducer(bootstrap_servers=stack["kafka"], **login)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, b"x", partition=0, key=str(i).encode())
    finally:
        await producer.stop()
    group = f"lag-{topic}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack["kafka"], group_id=group, enable_auto_commit=False, **login
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
    finally:
        await consumer.stop()

    code, out = await run("lag", "--group", group, "--bootstrap", stack["kafka"])
    assert code == 0, out
    row = next(line for line in out.splitlines() if topic in line)
    assert row.split("│")[-2].strip() == "3"  # 5 records, 2 committed
