"""A broker of the three-node cluster is lost in the middle of a burst of lookups (issue 15).

Runs against `CDAP_KAFKA_BROKERS=3` only (`make test-cluster`). One node is SIGKILLed a third of the way
into 5,000 lookups and restarted at two thirds: topics keep three replicas and need two in sync, so the
services go on writing while it is gone. Every lookup is answered 200 (with the id of its recorded
consultation) or 503 (without data); every recorded consultation is in the audit log exactly once; every
checkpoint the audit signed meanwhile is a prefix of the final log, whose entries all recompute its root.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cdap_audit import verify
from cdap_audit.client import AuditClient, AuditClientError
from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent
from cdap_shared.kafka_access import KafkaLogin, stack_dir
from cdap_shared.topics import named
from cdap_testing import eventually
from cdap_testing.system import System

from .test_faults import (
    BURST,
    FAST,
    Answer,
    audit_ids,
    auditor,
    burst_rules,
    lookup_burst,
    ready_partner,
    seed_dossiers,
    until_counted,
    until_granted,
)

# A loaded 2-core machine needs several minutes for the burst and the audit to catch up.
pytestmark = [pytest.mark.stack, pytest.mark.cluster, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[2]


async def leaders(kafka: str, topic: str) -> dict[int, tuple[int, int]]:
    """Partition -> (leader node, how many replicas are in sync) of `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: (p["leader"], len(p["isr"])) for p in described["partitions"]}


def node_pid(node: int) -> int:
    return int((stack_dir() / "kafka" / "cluster" / f"node-{node}" / "kafka.pid").read_text())


def restart_missing_nodes(kafka: str) -> None:
    """`stack.sh kafka-up` for this cluster: it starts the node that is down and leaves the others."""
    ports = [int(address.rsplit(":", 1)[1]) for address in kafka.split(",")]
    env = {
        **os.environ,
        "CDAP_KAFKA_BROKERS": str(len(ports)),
        "CDAP_KAFKA_PORT": str(ports[0]),
        "CDAP_STACK_DIR": str(stack_dir()),
    }
    subprocess.run(
        ["bash", str(ROOT / "deploy/local/stack.sh"), "kafka-up"], env=env, check=True, capture_output=True
    )


async def checkpoints_since(
    kafka: str, since: dict[TopicPartition, int], origin: str
) -> list[dict[str, Any]]:
    """The checkpoints `origin` published on `audit.checkpoints` after `since`, as published."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(since))
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    data = ev.parse_data(CloudEvent.from_bytes(record.value))
                    if isinstance(data, ev.CheckpointSigned) and data.origin == origin:
                        found.append(data.model_dump())
    finally:
        await consumer.stop()
    return found


async def checkpoint_offsets(kafka: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(
        named("audit.checkpoints"), bootstrap_servers=kafka, **KafkaLogin.from_env().options()
    )
    await consumer.start()
    try:
        parts = [
            TopicPartition(named("audit.checkpoints"), p)
            for p in consumer.partitions_for_topic(named("audit.checkpoints"))
        ]
        return await consumer.end_offsets(parts)
    finally:
        await consumer.stop()


async def test_a_broker_killed_during_a_burst_loses_no_consultation(
    system: System, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    brokers = system.kafka.count(",") + 1
    assert brokers >= 3, f"needs the three-broker stack (make test-cluster), not {system.kafka}"
    origin = f"cdap.audit/broker-loss-{system.run_id}"
    await system.start(
        "identity",
        "dossiers",
        "audit",
        extra_env={"dossiers": FAST, "audit": {**burst_rules(tmp_path), "CDAP_AUDIT_ORIGIN": origin}},
    )
    admin, user = await ready_partner(system, client)
    auditor_headers = await auditor(system, client, admin)
    with AuditClient(system.url("audit"), auditor_headers["Authorization"].removeprefix("Bearer ")) as audit:
        saved = await eventually(lambda: asyncio.to_thread(_checkpoint_or_none, audit), within=60)
        since = await checkpoint_offsets(system.kafka)
        expected = await burst_with_a_broker_lost(system, client, user)

        async def all_audited() -> list[str] | None:
            found = await audit_ids(client, system.url("audit"), auditor_headers, user["user_id"])
            return found if expected <= set(found) else None

        found = await eventually(all_audited, within=300, interval=1)
        assert len(found) == len(set(found)), "a consultation was audited twice"
        # The lost node is back, and in sync again.
        await eventually(lambda: _all_in_sync(system.kafka, brokers), within=120, interval=1)

        # Every checkpoint signed meanwhile is a prefix of the final log (consistency proofs), and the
        # final log's entries recompute its root.
        async def signed_everything() -> bool:
            final = await asyncio.to_thread(verify.fetch_checkpoint, audit)
            return final.tree_size >= saved.tree_size + len(expected)

        await eventually(signed_everything, within=60)
        published = await checkpoints_since(system.kafka, since, origin)
        assert published, "no checkpoint was published during the burst"
        sizes = [c["tree_size"] for c in published]
        assert sizes == sorted(sizes), f"checkpoint sizes went backwards: {sizes}"
        for c in published:
            signed = verify.SavedCheckpoint(**c, verifier_key=saved.verifier_key)
            await asyncio.to_thread(verify.verify_log, audit, signed, None)
        await asyncio.to_thread(verify.verify_log, audit, saved, None, all_entries=True)


async def burst_with_a_broker_lost(
    system: System, client: httpx.AsyncClient, user: dict[str, Any]
) -> set[str]:
    """5,000 lookups, the node leading most partitions of `dossier.consultations` SIGKILLed at a third
    and restarted at two thirds; returns the consultation ids the answers carry (each answer checked)."""
    numeros = await seed_dossiers(system.kafka, 5_600_000 + random.randint(0, 80_000), 20)
    lookup = f"{system.url('dossiers')}/v1/dossiers/"
    for numero in numeros:
        await until_granted(client, lookup + numero, user["headers"])
    led = Counter(
        leader for leader, _ in (await leaders(system.kafka, named("dossier.consultations"))).values()
    )
    victim = led.most_common(1)[0][0]

    async def chaos(answered: list[Answer]) -> None:
        await until_counted(answered, BURST // 3)
        pid = node_pid(victim)
        os.kill(pid, signal.SIGKILL)
        await until_counted(answered, 2 * BURST // 3)
        assert not Path(f"/proc/{pid}").exists(), "the broker outlived its SIGKILL"
        await asyncio.to_thread(restart_missing_nodes, system.kafka)

    answered = await lookup_burst(client, lookup, numeros, user["headers"], chaos)
    for status, audit_id, body in answered:
        assert status in (200, 503), (status, body[:200])
        if status == 200:
            assert audit_id and '"sections"' in body, (audit_id, body[:200])
        else:
            assert '"sections"' not in body, "a 503 carried dossier data"
    return {a for _, a, _ in answered if a}


def _checkpoint_or_none(audit: AuditClient) -> verify.SavedCheckpoint | None:
    try:
        return verify.fetch_checkpoint(audit)
    except (AuditClientError, verify.VerificationFailed):  # none signed yet
        return None


async def _all_in_sync(kafka: str, brokers: int) -> bool:
    return all(
        isr == min(brokers, 3) for _, isr in (await leaders(kafka, named("dossier.consultations"))).values()
    )
