"""Faults across the running system (issue 8): broker killed during a burst, PostgreSQL stopped, services
killed with SIGKILL mid-work, a replica lost, poison on every topic. Each compares ids end to end."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cdap_dossiers.generate import build_pools, make_dossier
from cdap_shared import events as ev
from cdap_shared.envelope import new_event_id

from .harness import System, activate_and_login, available, wait_ready
from .test_revocation import provisioned_partner, publish

pytestmark = [pytest.mark.stack, pytest.mark.stack_lifecycle]
FAST = {"CDAP_RATE_LIMIT_USER": "100000"}


def burst_rules(tmp: Path) -> dict[str, str]:
    """Audit settings whose volume rules tolerate a test burst: by default, 500 consultations in an hour
    raise a critical alert and identity suspends the account (which is right, but not this test's point)."""
    from cdap_audit.rules import DEFAULT_RULES

    text = DEFAULT_RULES.read_text().replace("max_count = 500", "max_count = 1000000")
    path = tmp / "rules.toml"
    path.write_text(text.replace("max_count = 100\n", "max_count = 1000000\n"))
    return {"CDAP_ALERT_RULES_PATH": str(path)}


def running_kafka() -> tuple[int, str]:
    """The broker's pid and the stack script that started it (maybe another checkout's, on a developer's
    machine), so that the restart reuses the same data directory."""
    out = subprocess.run(["pgrep", "-f", "kafka.Kafka"], capture_output=True, text=True, check=True)
    pid = int(out.stdout.split()[0])
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    properties = Path(next(a for a in args if a.endswith(b"server.properties")).decode())
    return pid, str(properties.parents[2] / "deploy" / "local" / "stack.sh")


async def seed_dossiers(kafka: str, first: int, count: int) -> list[str]:
    rng, pools = random.Random(first), build_pools(3, 50)
    numeros = [f"{first + i:07d}" for i in range(count)]
    for numero in numeros:
        data = make_dossier(rng, pools, numero, "76").model_copy(update={"opposition": False})
        await publish(
            kafka,
            "caf.dossiers",
            ev.make_event("caf.dossier.upserted", source="/caf", subject=numero, data=data),
        )
    return numeros


async def ready_partner(system: System, client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    for name in system.processes:
        await wait_ready(client, system.url(name))
    admin, email, _ = await provisioned_partner(system, client)
    return admin, await activate_and_login(client, system.url("identity"), email)


async def until_granted(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], seconds: float = 20
) -> None:
    for _ in range(int(seconds / 0.1)):
        r = await client.get(url, params={"motif": "accompagnement_social"}, headers=headers)
        if r.status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never granted: {r.status_code} {r.text[:200]}")


async def audit_ids(client: httpx.AsyncClient, audit: str, headers: dict[str, str], actor: str) -> list[str]:
    """Every event id the audit log holds for `actor` (all pages)."""
    ids: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"actor": actor, "type": "dossier.consulted", "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(f"{audit}/v1/entries", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [e["event_id"] for e in body["items"]]
        cursor = body.get("next_cursor")
        if not cursor:
            return ids


async def auditor(system: System, client: httpx.AsyncClient, admin: dict[str, Any]) -> dict[str, str]:
    email = f"auditeur.{new_event_id()[-8:]}@caf76.fr"
    r = await client.post(
        f"{system.url('identity')}/v1/users",
        headers=admin["headers"],
        json={
            "email": email,
            "family_name": "Contrôle",
            "given_name": "Anne",
            "roles": ["auditor"],
            "department": "76",
        },
    )
    assert r.status_code == 201, r.text
    return (await activate_and_login(client, system.url("identity"), email))["headers"]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=40)) as c:
        yield c


async def test_kafka_killed_during_a_burst_every_consultation_is_audited_once(
    system: System, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await system.start(
        "identity", "dossiers", "audit", extra_env={"dossiers": FAST, "audit": burst_rules(tmp_path)}
    )
    admin, user = await ready_partner(system, client)
    numeros = await seed_dossiers(system.kafka, 5_100_000 + random.randint(0, 80_000), 20)
    lookup = f"{system.url('dossiers')}/v1/dossiers/"
    for numero in numeros:
        await until_granted(client, lookup + numero, user["headers"])

    total, answered = 5_000, []
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            r = await client.get(
                lookup + numeros[i % len(numeros)],
                params={"motif": "accompagnement_social"},
                headers=user["headers"],
            )
            answered.append(
                (r.status_code, r.headers.get("X-Audit-Id"), "sections" in r.text or r.text[:200])
            )

    async def chaos() -> None:
        while len(answered) < total // 3:
            await asyncio.sleep(0.05)
        pid, stack_script = running_kafka()
        subprocess.run(["kill", "-9", str(pid)], check=True)
        while len(answered) < 2 * total // 3:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(subprocess.run, ["bash", stack_script, "up"], check=True, capture_output=True)

    await asyncio.gather(chaos(), *(one(i) for i in range(total)))
    assert len(answered) == total
    for status, audit_id, has_data in answered:
        assert status == 200 and audit_id, (status, audit_id, has_data)
        assert has_data
    expected = sorted(a for _, a, _ in answered)
    audit = system.url("audit")
    headers = await auditor(system, client, admin)
    for _ in range(300):
        found = await audit_ids(client, audit, headers, user["user_id"])
        if set(expected) <= set(found):
            break
        await asyncio.sleep(1)
    assert len(found) == len(set(found)), "a consultation was audited twice"
    missing = set(expected) - set(found)
    assert not missing, f"{len(missing)} consultations are missing from the audit log"


async def test_postgresql_stopped_means_503_and_no_data_then_recovery(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.start("identity", "dossiers")
    _, user = await ready_partner(system, client)
    [numero] = await seed_dossiers(system.kafka, 5_200_000 + random.randint(0, 80_000), 1)
    url = f"{system.url('dossiers')}/v1/dossiers/{numero}"
    await until_granted(client, url, user["headers"])
    version = subprocess.run(["ls", "/usr/lib/postgresql"], capture_output=True, text=True).stdout.split()[-1]
    subprocess.run(["pg_ctlcluster", version, "main", "stop", "-m", "fast"], check=True)
    try:
        for _ in range(5):
            r = await client.get(url, params={"motif": "accompagnement_social"}, headers=user["headers"])
            assert r.status_code == 503 and "sections" not in r.text and "X-Audit-Id" not in r.headers
        assert (await client.get(f"{system.url('dossiers')}/ready")).status_code == 503
    finally:
        subprocess.run(["pg_ctlcluster", version, "main", "start"], check=True)
    await until_granted(client, url, user["headers"], seconds=30)


async def test_services_killed_with_sigkill_lose_nothing_and_double_nothing(
    system: System, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await system.start(
        "identity", "dossiers", "audit", extra_env={"dossiers": FAST, "audit": burst_rules(tmp_path)}
    )
    admin, user = await ready_partner(system, client)
    numeros = await seed_dossiers(system.kafka, 5_300_000 + random.randint(0, 80_000), 10)
    lookup = f"{system.url('dossiers')}/v1/dossiers/"
    for numero in numeros:
        await until_granted(client, lookup + numero, user["headers"])
    ids: list[str] = []

    async def burst(n: int) -> None:
        for i in range(n):
            try:
                r = await client.get(
                    lookup + numeros[i % 10],
                    params={"motif": "accompagnement_social"},
                    headers=user["headers"],
                )
            except httpx.HTTPError:
                continue  # the service was killed under this request: no answer, nothing shown
            if r.status_code == 200:
                assert r.headers["X-Audit-Id"]
                ids.append(r.headers["X-Audit-Id"])

    for victim in ("dossiers", "audit", "dossiers"):
        task = asyncio.create_task(burst(300))
        await asyncio.sleep(0.5)
        await system.restart(victim, signal.SIGKILL)
        await task
        await wait_ready(client, system.url(victim))
    headers = await auditor(system, client, admin)
    for _ in range(120):
        found = await audit_ids(client, system.url("audit"), headers, user["user_id"])
        if set(ids) <= set(found):
            break
        await asyncio.sleep(1)
    assert set(ids) <= set(found), f"{len(set(ids) - set(found))} consultations never reached the audit log"
    assert len(found) == len(set(found)), "a consultation was audited twice"


async def test_a_replica_killed_leaves_its_partitions_to_the_other(
    system: System, client: httpx.AsyncClient
) -> None:
    await system.start("identity", "dossiers")
    _, user = await ready_partner(system, client)
    # A second replica of the dossiers service: same database, same consumer group.
    second = System(admin_url=system.admin_url, kafka=system.kafka, run_id=system.run_id)
    second.databases = {"dossiers": system.databases["dossiers"]}
    second.ports = {"identity": system.ports["identity"]}
    await second.start("dossiers")
    try:
        await wait_ready(client, second.url("dossiers"))
        await asyncio.sleep(3)  # the group rebalances over both replicas
        await asyncio.to_thread(system.processes["dossiers"].stop, signal.SIGKILL)
        numeros = await seed_dossiers(system.kafka, 5_400_000 + random.randint(0, 80_000), 30)
        for numero in numeros:  # every partition's dossiers reach the surviving replica
            await until_granted(client, f"{second.url('dossiers')}/v1/dossiers/{numero}", user["headers"], 60)
    finally:
        second.stop()


async def end_offsets(kafka: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=kafka)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or []]
        return await consumer.end_offsets(parts)
    finally:
        await consumer.stop()


async def groups_in_dlq(kafka: str, since: dict[TopicPartition, int], poison: bytes) -> set[tuple[str, str]]:
    """(original topic, consumer group) of every dead letter carrying `poison`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
    await consumer.start()
    found: set[tuple[str, str]] = set()
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        for _ in range(10):
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    if r.value == poison:
                        found.add((headers["x-original-topic"], headers["x-consumer-group"]))
    finally:
        await consumer.stop()
    return found


async def test_poison_on_every_topic_goes_to_the_dlq_and_processing_goes_on(
    system: System, client: httpx.AsyncClient
) -> None:
    names = [n for n in ("identity", "access-requests", "dossiers", "audit") if available(n)]
    await system.start(*names)
    _, user = await ready_partner(system, client)
    topics = ["identity.events", "access.events", "caf.dossiers", "dossier.consultations", "audit.alerts"]
    since = await end_offsets(system.kafka, [f"{t}.dlq" for t in topics])
    poison = f"not an event {new_event_id()}".encode()
    for topic in topics:
        from cdap_shared.relay import make_producer

        producer = make_producer(system.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(topic, poison, key=b"poison")
        finally:
            await producer.stop()
    # Processing goes on: a dossier published after the poison is served.
    [numero] = await seed_dossiers(system.kafka, 5_500_000 + random.randint(0, 80_000), 1)
    await until_granted(client, f"{system.url('dossiers')}/v1/dossiers/{numero}", user["headers"])
    expected = {
        ("caf.dossiers", f"dossiers-{system.run_id}"),
        ("identity.events", f"dossiers-{system.run_id}"),
        ("access.events", f"identity-{system.run_id}"),
        ("audit.alerts", f"identity-{system.run_id}"),
    }
    if available("access-requests"):
        expected.add(("identity.events", f"access-requests-{system.run_id}"))
    if available("audit"):
        expected |= {
            (t, f"audit-{system.run_id}")
            for t in ("identity.events", "access.events", "dossier.consultations", "audit.alerts")
        }
    for _ in range(30):
        found = await groups_in_dlq(system.kafka, since, poison)
        if expected <= found:
            break
        await asyncio.sleep(1)
    assert expected <= found, expected - found
