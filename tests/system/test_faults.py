"""Faults across the running system (issue 8): broker killed during a burst, PostgreSQL stopped, services
killed with SIGKILL mid-work, a replica lost, poison on every topic. Each compares ids end to end."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import subprocess
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cdap_cli.caf_feed import build_pools, make_dossier
from cdap_cli.topics import PARTITIONS
from cdap_shared import events as ev
from cdap_shared.envelope import new_event_id
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.services import backends
from cdap_shared.topics import named
from cdap_testing import eventually
from cdap_testing.events import publish, request_approved
from cdap_testing.system import (
    MAILBOX,
    System,
    access_request,
    activate_and_login,
    assigned_partitions,
    available,
    bootstrap_admin,
    caf_staff,
    partner_organisation,
    publish_over_partitions,
    submit_when_known,
    wait_ready,
)

from .test_revocation import provisioned_partner

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
            named("caf.dossiers"),
            ev.make_event("caf.dossier.upserted", source="/caf", subject=numero, data=data),
        )
    return numeros


async def ready_partner(system: System, client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    await wait_ready(client, *(system.url(name) for name in system.processes))
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
    headers: dict[str, str] = (await caf_staff(system, client, admin, "auditor"))["headers"]
    return headers


Answer = tuple[int, str | None, str]  # status, X-Audit-Id, body
BURST = 5_000


async def lookup_burst(
    client: httpx.AsyncClient,
    lookup: str,
    numeros: list[str],
    headers: dict[str, str],
    chaos: Callable[[list[Answer]], Awaitable[None]],
) -> list[Answer]:
    """`BURST` lookups over `numeros`, 20 at a time, with `chaos(the answers so far)` running beside."""
    answered: list[Answer] = []
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            r = await client.get(
                lookup + numeros[i % len(numeros)], params={"motif": "accompagnement_social"}, headers=headers
            )
            answered.append((r.status_code, r.headers.get("X-Audit-Id"), r.text))

    await asyncio.gather(chaos(answered), *(one(i) for i in range(BURST)))
    assert len(answered) == BURST
    return answered


async def until_counted(answered: list[Answer], count: int) -> None:
    while len(answered) < count:
        await asyncio.sleep(0.05)


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

    async def chaos(answered: list[Answer]) -> None:
        await until_counted(answered, BURST // 3)
        pid, stack_script = running_kafka()
        subprocess.run(["kill", "-9", str(pid)], check=True)
        await until_counted(answered, 2 * BURST // 3)
        await asyncio.to_thread(subprocess.run, ["bash", stack_script, "up"], check=True, capture_output=True)

    answered = await lookup_burst(client, lookup, numeros, user["headers"], chaos)
    for status, audit_id, body in answered:
        assert status == 200 and audit_id, (status, audit_id, body[:200])
        assert "sections" in body
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


async def until_answered(
    call: Callable[[], Awaitable[httpx.Response]], seconds: float = 90
) -> httpx.Response:
    """What a careful client does while a service is down or restarting: retry the same call (same
    Idempotency-Key) until it gets an answer that is not a server error."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            r = await call()
            if r.status_code < 500:
                return r
        except httpx.HTTPError:
            pass  # killed under this request, or not listening yet
        assert asyncio.get_running_loop().time() < deadline, "no answer while the service restarted"
        await asyncio.sleep(0.3)


async def audit_entries(
    client: httpx.AsyncClient, audit: str, headers: dict[str, str], event_type: str
) -> list[dict[str, Any]]:
    """Every audit entry of `event_type` (all pages), with the refs decoded from its leaf."""
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"type": event_type, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(f"{audit}/v1/entries", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        entries += [e | {"refs": json.loads(base64.b64decode(e["leaf"]))["refs"]} for e in body["items"]]
        cursor = body.get("next_cursor")
        if not cursor:
            return entries


async def test_access_requests_and_identity_killed_mid_work_lose_nothing_and_double_nothing(
    system: System, client: httpx.AsyncClient
) -> None:
    """A batch of T1 requests goes through the four-eyes workflow while access-requests is killed during
    the submissions and during the first-level decisions, and identity while it provisions from the
    second-level approvals. Every request ends provisioned, with one account and one grant, one mail of each
    kind, and each step once in the audit log."""
    await system.start("identity", "access-requests", "audit")
    await wait_ready(client, *(system.url(name) for name in system.processes))
    admin = await bootstrap_admin(system, client, f"admin.{new_event_id()[-10:]}@caf76.fr")
    (org, partner), instructor, manager, auditing = await asyncio.gather(
        partner_organisation(system, client, admin),
        caf_staff(system, client, admin, "caf_instructor"),
        caf_staff(system, client, admin, "caf_manager"),
        caf_staff(system, client, admin, "auditor"),
    )
    audit_headers = auditing["headers"]
    access = system.url("access-requests")
    valid_until = (date.today() + timedelta(days=200)).isoformat()
    # The organisation reaches access-requests through identity.events before the batch starts.
    first = await submit_when_known(
        client,
        access,
        partner["headers"],
        access_request(org["id"], f"x.{new_event_id()}@ccas.fr", "T1", valid_until),
    )
    assert first.status_code == 201, first.text
    await until_answered(
        lambda: client.post(
            f"{access}/v1/access-requests/{first.json()['id']}/withdraw", headers=partner["headers"]
        )
    )

    async def batch(
        calls: list[Callable[[], Awaitable[httpx.Response]]], victim: str
    ) -> list[httpx.Response]:
        """Run the calls four at a time; once a third is answered, SIGKILL `victim` and start it again."""
        answered: list[httpx.Response] = []
        sem = asyncio.Semaphore(4)

        async def one(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
            async with sem:
                r = await until_answered(call)
                answered.append(r)
                return r

        async def chaos() -> None:
            while len(answered) < len(calls) // 3:
                await asyncio.sleep(0.02)
            await system.restart(victim, signal.SIGKILL)

        *responses, _ = await asyncio.gather(*(one(c) for c in calls), chaos())
        await wait_ready(client, system.url(victim))
        return responses

    def post(url: str, who: dict[str, Any], body: dict[str, Any]) -> Callable[[], Awaitable[httpx.Response]]:
        headers = who["headers"] | {"Idempotency-Key": new_event_id()}
        return lambda: client.post(url, headers=headers, json=body)

    count = 18
    applicants = [f"agent.{i}.{new_event_id()[-10:]}@ccas-rouen.fr" for i in range(count)]
    submitted = await batch(
        [
            post(f"{access}/v1/access-requests", partner, access_request(org["id"], a, "T1", valid_until))
            for a in applicants
        ],
        "access-requests",
    )
    assert all(r.status_code == 201 for r in submitted), [r.text for r in submitted if r.status_code != 201]
    ids = [r.json()["id"] for r in submitted]
    assert len(set(ids)) == count
    approve = {"decision": "approve", "comment": "Le poste correspond au profil"}
    stage1 = await batch(
        [post(f"{access}/v1/access-requests/{i}/decisions", instructor, approve) for i in ids],
        "access-requests",
    )
    assert all(r.status_code == 200 and r.json()["state"] == "awaiting_second_approval" for r in stage1), [
        r.text for r in stage1
    ]
    stage2 = await batch(
        [post(f"{access}/v1/access-requests/{i}/decisions", manager, approve) for i in ids], "identity"
    )
    assert all(r.status_code == 200 and r.json()["state"] == "approved" for r in stage2), [
        r.text for r in stage2
    ]

    # Access-requests: the organisation's requests are exactly the batch (no retry made a second one), and
    # each ends provisioned, its history holding each step once.
    async def all_provisioned() -> list[dict[str, Any]] | None:
        details = [
            (await client.get(f"{access}/v1/access-requests/{i}", headers=instructor["headers"])).json()
            for i in ids
        ]
        return details if all(d["state"] == "provisioned" for d in details) else None

    details = await eventually(all_provisioned, within=90, interval=1)
    for d in details:
        actions = [h["action"] for h in d["history"]]
        assert sorted(actions) == sorted(["submitted", "stage_approved", "approved", "provisioned"]), actions
    listed = await client.get(
        f"{access}/v1/access-requests", params={"limit": 200}, headers=partner["headers"]
    )
    assert listed.status_code == 200, listed.text
    assert sorted(r["id"] for r in listed.json()["items"] if r["state"] != "withdrawn") == sorted(ids)

    # Identity: one grant per request, each for its own new account.
    grants = await client.get(
        f"{system.url('identity')}/v1/grants", params={"department": "76"}, headers=admin["headers"]
    )
    assert grants.status_code == 200, grants.text
    mine = [g for g in grants.json() if g["request_id"] in set(ids)]
    assert sorted(g["request_id"] for g in mine) == sorted(ids), "a request has no grant, or two"
    assert len({g["user_id"] for g in mine}) == count
    assert {d["grant_id"] for d in details} == {g["id"] for g in mine}

    # Audit: each step of each request once (a redelivered event keeps its id; a step done twice would not).
    expected = {
        "access.request.submitted": lambda e: e["subject"],
        "access.request.stage_approved": lambda e: e["subject"],
        "access.request.approved": lambda e: e["subject"],
        "identity.user.provisioned": lambda e: e["refs"]["request_id"],
        "identity.grant.issued": lambda e: e["refs"]["request_id"],
    }

    async def audited() -> dict[str, list[str]] | None:
        found = {}
        for event_type, request_of in expected.items():
            entries = await audit_entries(client, system.url("audit"), audit_headers, event_type)
            event_ids = [e["event_id"] for e in entries]
            assert len(event_ids) == len(set(event_ids)), f"an {event_type} event was logged twice"
            found[event_type] = sorted(r for r in map(request_of, entries) if r in set(ids))
        return found if all(set(v) == set(ids) for v in found.values()) else None

    found = await eventually(audited, within=60, interval=1)
    for event_type, requests in found.items():
        assert requests == sorted(ids), f"{event_type}: a request's step was recorded twice"

    # Mail last, as it is the weakest link: every applicant gets one activation mail and the partner
    # administrator each notice (first level, approved, created) once per request. A mail relay that
    # marks a whole batch sent only after sending all of it re-sends the batch if killed in between.
    async def activations() -> list[int] | None:
        counts = [len(MAILBOX.to(a)) for a in applicants]
        return counts if all(counts) else None

    async def notices() -> dict[str, list[str]] | None:
        subjects = [m.splitlines()[0] for m in MAILBOX.to(partner["email"])]
        about = {i: [s for s in subjects if f"({i[-8:]})" in s] for i in ids}
        return about if all(len(set(s)) == 3 for s in about.values()) else None

    activation_counts = await eventually(activations, within=60, interval=1)
    notices_by_request = await eventually(notices, within=60, interval=1)
    doubled = {i: s for i, s in notices_by_request.items() if len(s) != len(set(s))}
    assert not doubled, f"notices sent twice: {doubled}"
    assert activation_counts == [1] * count, f"activation mails per applicant: {activation_counts}"


# What each service consumes, in its one consumer group (see each app.py).
CONSUMED = {
    "dossiers": (named("caf.dossiers"), named("identity.events")),
    "identity": (named("access.events"), named("audit.alerts")),
    "access-requests": (named("identity.events"),),
    "audit": tuple(
        named(t) for t in ("identity.events", "access.events", "dossier.consultations", "audit.alerts")
    ),
}


async def records_since(kafka: str, since: dict[TopicPartition, int]) -> list[Any]:
    """Every record from `since` up to the end offsets as they are now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await consumer.start()
    found: list[Any] = []
    try:
        ends = await consumer.end_offsets(list(since))
        todo = {tp for tp in since if ends[tp] > since[tp]}
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, since[tp])
        while todo:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                found += records
                if records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return found


class ReplicaScenario:
    """How to warm one service's first replica up and how to prove that the survivor serves every
    partition. Warming up matters: a fresh group starts at `latest`, and a partition whose offset was never
    committed would restart at the end after the takeover, skipping what was published in between. One
    processed batch commits the positions of every partition the replica holds, as a long-running group
    always has."""

    def __init__(self, system: System, client: httpx.AsyncClient) -> None:
        self.system, self.client = system, client
        self.state: dict[str, Any] = {}

    async def warm(self) -> None:
        raise NotImplementedError

    async def act(self, survivor: str) -> None:
        """Right after the kill, before the group notices: events for every partition."""
        raise NotImplementedError

    async def check(self, survivor: str) -> None:
        """The survivor has handled every one of them."""
        raise NotImplementedError


class DossiersReplicas(ReplicaScenario):
    async def warm(self) -> None:
        _, self.state["user"] = await ready_partner(self.system, self.client)
        [numero] = await seed_dossiers(self.system.kafka, 5_400_000 + random.randint(0, 80_000), 1)
        await until_granted(
            self.client, f"{self.system.url('dossiers')}/v1/dossiers/{numero}", self.state["user"]["headers"]
        )

    async def act(self, survivor: str) -> None:
        first = 5_480_000 + random.randint(0, 10_000)
        rng, pools = random.Random(first), build_pools(3, 50)

        def dossier(i: int) -> ev.CloudEvent:
            numero = f"{first + i:07d}"
            data = make_dossier(rng, pools, numero, "76").model_copy(update={"opposition": False})
            return ev.make_event("caf.dossier.upserted", source="/caf", subject=numero, data=data)

        sent = await publish_over_partitions(self.system.kafka, named("caf.dossiers"), dossier)
        self.state["numeros"] = [event.subject for event, _ in sent]

    async def check(self, survivor: str) -> None:
        for numero in self.state["numeros"]:  # every partition's dossiers are served by the survivor
            url = f"{survivor}/v1/dossiers/{numero}"
            await until_granted(self.client, url, self.state["user"]["headers"], 60)


class IdentityReplicas(ReplicaScenario):
    async def warm(self) -> None:
        await wait_ready(self.client, *(self.system.url(name) for name in self.system.processes))
        self.state["admin"], email, self.state["org"] = await provisioned_partner(self.system, self.client)
        await activate_and_login(self.client, self.system.url("identity"), email)  # it provisioned

    async def act(self, survivor: str) -> None:
        def approved(i: int) -> ev.CloudEvent:
            email = f"replica.{i}.{new_event_id()[-10:]}@ccas-rouen.fr"
            person = {"family_name": "Roux", "given_name": "Paul", "job_title": "Animateur"}
            return request_approved(
                self.state["org"]["id"], email, "T3", source="/system-test", applicant=person
            )

        sent = await publish_over_partitions(self.system.kafka, named("access.events"), approved)
        self.state["requests"] = {event.subject for event, _ in sent}

    async def check(self, survivor: str) -> None:
        expected = self.state["requests"]

        async def provisioned() -> bool:
            r = await self.client.get(
                f"{survivor}/v1/grants", params={"department": "76"}, headers=self.state["admin"]["headers"]
            )
            assert r.status_code == 200, r.text
            issued = [g["request_id"] for g in r.json() if g["request_id"] in expected]
            assert len(issued) == len(set(issued)), "a request was provisioned twice"
            return set(issued) == expected

        await eventually(provisioned, within=60, interval=0.5)


class AccessRequestsReplicas(ReplicaScenario):
    async def warm(self) -> None:
        await wait_ready(self.client, *(self.system.url(name) for name in self.system.processes))
        admin = await bootstrap_admin(self.system, self.client, f"admin.{new_event_id()[-10:]}@caf76.fr")
        self.state["org"], self.state["partner"] = await partner_organisation(self.system, self.client, admin)
        self.state["instructor"] = await caf_staff(self.system, self.client, admin, "caf_instructor")
        # Accepted only once the replica has consumed the organisation from identity.events.
        r = await self.submit(self.system.url("access-requests"))
        assert r.status_code == 201, r.text

    async def submit(self, access: str) -> httpx.Response:
        body = access_request(
            self.state["org"]["id"],
            f"replica.{new_event_id()[-12:]}@ccas-rouen.fr",
            "T3",  # one stage: the instructor's approval is enough
            (date.today() + timedelta(days=200)).isoformat(),
        )
        return await submit_when_known(self.client, access, self.state["partner"]["headers"], body)

    async def act(self, survivor: str) -> None:
        # Identity provisions each approved request and publishes identity.grant.issued keyed by the new
        # account's id: where that lands is up to the key, so approve until every partition got one.
        topic = named("identity.events")
        since = await end_offsets(self.system.kafka, [topic])
        requests: set[str] = set()
        partitions: set[int] = set()
        for _ in range(8):
            for _ in range(6):
                r = await self.submit(survivor)
                assert r.status_code == 201, r.text
                decided = await self.client.post(
                    f"{survivor}/v1/access-requests/{r.json()['id']}/decisions",
                    headers=self.state["instructor"]["headers"],
                    json={"decision": "approve", "comment": "Le poste correspond"},
                )
                assert decided.status_code == 200, decided.text
                requests.add(r.json()["id"])

            async def issued() -> set[int] | None:
                found = {}
                for record in await records_since(self.system.kafka, since):
                    event = ev.CloudEvent.from_bytes(record.value)
                    if event.type == "identity.grant.issued" and event.data.get("request_id") in requests:
                        found[event.data["request_id"]] = record.partition
                return set(found.values()) if set(found) == requests else None

            partitions = await eventually(issued, within=60, interval=0.5)
            if len(partitions) == 6:
                break
        assert len(partitions) == 6, partitions
        self.state["requests"] = requests

    async def check(self, survivor: str) -> None:
        requests = self.state["requests"]

        async def all_provisioned() -> bool:
            states = []
            for request_id in requests:
                r = await self.client.get(
                    f"{survivor}/v1/access-requests/{request_id}", headers=self.state["instructor"]["headers"]
                )
                assert r.status_code == 200, r.text
                states.append(r.json()["state"])
            return all(s == "provisioned" for s in states)

        await eventually(all_provisioned, within=60, interval=0.5)


class AuditReplicas(ReplicaScenario):
    async def warm(self) -> None:
        await wait_ready(self.client, *(self.system.url(name) for name in self.system.processes))
        admin = await bootstrap_admin(self.system, self.client, f"admin.{new_event_id()[-10:]}@caf76.fr")
        self.state["auditor"] = await auditor(self.system, self.client, admin)
        await self.logged(self.system.url("audit"), *await self.consultations(count=1))

    async def consultations(self, count: int | None = None) -> tuple[str, list[ev.CloudEvent]]:
        """Consultation events from one partner (a fresh id): `count` of them, or enough for every
        partition."""
        actor = f"partner-{new_event_id()}"

        def consulted(i: int) -> ev.CloudEvent:
            numero = f"{5_600_000 + random.randint(0, 99_999):07d}"
            data = ev.DossierConsulted(
                actor=actor, numero=numero, motif="accompagnement_social", decision="denied"
            )
            return ev.make_event("dossier.consulted", source="/system-test", subject=numero, data=data)

        if count is None:
            sent = await publish_over_partitions(self.system.kafka, named("dossier.consultations"), consulted)
            events = [event for event, _ in sent]
        else:
            events = [consulted(i) for i in range(count)]
            for event in events:
                await publish(self.system.kafka, named("dossier.consultations"), event)
        return actor, events

    async def logged(self, audit: str, actor: str, events: list[ev.CloudEvent]) -> None:
        """All found in the log, exactly once."""

        async def complete() -> bool:
            found = await audit_ids(self.client, audit, self.state["auditor"], actor)
            assert len(found) == len(set(found)), "a consultation was logged twice"
            return set(found) == {e.id for e in events}

        await eventually(complete, within=60, interval=0.5)

    async def act(self, survivor: str) -> None:
        self.state["sent"] = await self.consultations()

    async def check(self, survivor: str) -> None:
        await self.logged(survivor, *self.state["sent"])


SCENARIOS: dict[str, type[ReplicaScenario]] = {
    "dossiers": DossiersReplicas,
    "identity": IdentityReplicas,
    "access-requests": AccessRequestsReplicas,
    "audit": AuditReplicas,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_replica_killed_leaves_its_partitions_to_the_other(
    system: System, client: httpx.AsyncClient, name: str
) -> None:
    """Two replicas of a consumer in one group; one is killed (no goodbye to the group): the other is given
    all the partitions and processes events from every one of them."""
    await system.start(*dict.fromkeys(["identity", name]))
    scenario = SCENARIOS[name](system, client)
    await scenario.warm()
    second = await system.replica(name)
    try:
        await wait_ready(client, second.url(name))
        everything = {(topic, p) for topic in CONSUMED[name] for p in range(PARTITIONS)}
        group = system.consumer_group(name)  # audit also runs its directory's group: not this one

        async def shared() -> bool:  # both replicas hold partitions: the takeover below is a real one
            mine = assigned_partitions(system.log_path(name), group)
            theirs = assigned_partitions(second.log_path(name), group)
            return bool(mine and theirs and mine | theirs == everything and not mine & theirs)

        await eventually(shared, within=60, interval=0.5)
        await asyncio.to_thread(system.processes[name].stop, signal.SIGKILL)
        # Published while the group still counts the dead replica (until its session times out): the
        # survivor must pick its partitions up from their committed offsets, not from their end.
        await scenario.act(second.url(name))

        async def taken_over() -> bool:
            return assigned_partitions(second.log_path(name), group) == everything

        await eventually(taken_over, within=60, interval=0.5)
        await scenario.check(second.url(name))
    finally:
        second.stop()


async def end_offsets(kafka: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or []]
        return await consumer.end_offsets(parts)
    finally:
        await consumer.stop()


async def groups_in_dlq(kafka: str, since: dict[TopicPartition, int], poison: bytes) -> set[tuple[str, str]]:
    """(original topic, consumer group) of every dead letter carrying `poison`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
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
    names = [n for n in backends() if available(n)]
    await system.start(*names)
    _, user = await ready_partner(system, client)
    topics = [
        named(t)
        for t in ("identity.events", "access.events", "caf.dossiers", "dossier.consultations", "audit.alerts")
    ]
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
        (named("caf.dossiers"), system.consumer_group("dossiers")),
        (named("identity.events"), system.consumer_group("dossiers")),
        (named("access.events"), system.consumer_group("identity")),
        (named("audit.alerts"), system.consumer_group("identity")),
    }
    if available("access-requests"):
        expected.add((named("identity.events"), system.consumer_group("access-requests")))
    if available("audit"):
        expected |= {
            (named(t), system.consumer_group("audit"))
            for t in ("identity.events", "access.events", "dossier.consultations", "audit.alerts")
        }
    for _ in range(30):
        found = await groups_in_dlq(system.kafka, since, poison)
        if expected <= found:
            break
        await asyncio.sleep(1)
    assert expected <= found, expected - found
