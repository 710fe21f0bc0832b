"""The system as users run it, for the system tests (tests/system) and the portal's browser tests: every
service a real uvicorn process, on fresh databases (dropped at the end), against the local Kafka and
PostgreSQL, on the test run's topics (`CDAP_TOPIC_PREFIX`, see cdap_testing). Consumer groups are fresh
and start at the end of the run's topics, so a test never replays an earlier test's events. Each service
logs in to Kafka as itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp

from cdap_shared.envelope import new_event_id
from cdap_shared.kafka_access import KafkaLogin, local_credentials, service_principal
from cdap_shared.services import SERVICES as REGISTRY
from cdap_shared.services import service
from cdap_shared.topics import named
from cdap_testing import (
    ServiceProcess,
    create_database_sync,
    drop_database_sync,
    free_port,
    mailbox,
    migrate,
    run_sync,
)

ROOT = Path(__file__).resolve().parents[3]
LOGS = ROOT / "test-artifacts" / "system"
PASSWORD = "Systeme-CDAP-2026!"
# uvicorn closes a keep-alive connection idle for 5 s; a client reusing one at that moment gets a
# ReadError (seen on a loaded machine after the slow `cdap identity bootstrap`). Dropping idle connections
# earlier on the client's side avoids the race.
CLIENT_LIMITS = httpx.Limits(max_connections=40, keepalive_expiry=2)

# name -> (package, folder) of each service, from the one list (cdap_shared.services).
SERVICES = {s.name: (s.package, ROOT / "services" / s.name) for s in REGISTRY}


def available(name: str) -> bool:
    return (SERVICES[name][1] / "src" / SERVICES[name][0] / "app.py").exists()


@dataclass
class System:
    admin_url: str
    kafka: str
    run_id: str = field(default_factory=lambda: new_event_id()[-8:])
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    logs: Path = LOGS
    # The databases this system made (a replica uses its primary's), dropped by `stop()`.
    created: list[str] = field(default_factory=list)
    # A second replica logs to its own file, so each replica's partition assignments can be read apart.
    log_suffix: str = ""
    # Environment every service of this system gets (e.g. a fake clock), before each one's own.
    common_env: dict[str, str] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def start(self, *names: str, extra_env: dict[str, dict[str, str]] | None = None) -> System:
        """Start services (blocking work in a thread: the test's event loop keeps running)."""
        return await asyncio.to_thread(self.start_blocking, *names, extra_env=extra_env)

    def consumer_group(self, name: str) -> str:
        """The consumer group of service `name` in this run (it may run more groups, named after it),
        under the run's topic prefix like the topics (the services inherit `CDAP_TOPIC_PREFIX`)."""
        return named(f"{name}-{self.run_id}")

    def start_blocking(self, *names: str, extra_env: dict[str, dict[str, str]] | None = None) -> System:
        """`start` for synchronous callers (module fixtures, a browser test's system): blocks until every
        named service answers."""
        for name in names:
            self.ports.setdefault(name, free_port())

        def prepare(name: str) -> ServiceProcess:
            module, folder = SERVICES[name]
            if service(name).database and name not in self.databases:
                self.databases[name] = create_database_sync(self.admin_url)
                self.created.append(self.databases[name])
                migrate(str(folder), self.databases[name])
            env = {**self._env(name), **self.common_env, **(extra_env or {}).get(name, {})}
            return ServiceProcess(module, env, self.log_path(name), port=self.ports[name])

        # Migrations and start-ups run side by side (each is mostly a Python process importing modules);
        # on a loaded machine that saves many seconds per test. Registered before starting, so that
        # `stop()` ends every process even if one fails to start.
        with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
            for name, process in zip(names, list(pool.map(prepare, names)), strict=True):
                self.processes[name] = process
            list(pool.map(lambda name: self.processes[name].start(wait=90), names))
        return self

    def _env(self, name: str) -> dict[str, str]:
        """What service `name` runs with here: its database and its own Kafka login (the test's
        principal, which the fixtures use, may do anything); the portal, where the others answer."""
        if name == "portal":
            urls = {
                "CDAP_IDENTITY_URL": "identity",
                "CDAP_ACCESS_REQUESTS_URL": "access-requests",
                "CDAP_DOSSIERS_URL": "dossiers",
                "CDAP_AUDIT_URL": "audit",
            }
            return {
                **{setting: self.url(other) for setting, other in urls.items() if other in self.ports},
                "CDAP_PORTAL_SECRET": secrets.token_urlsafe(32),
                "CDAP_LOG_LEVEL": "WARNING",
            }
        return {
            **local_credentials(service_principal(name)),
            "CDAP_DATABASE_URL": self.databases[name],
            "CDAP_KAFKA_BOOTSTRAP": self.kafka,
            "CDAP_CONSUMER_GROUP": self.consumer_group(name),
            "CDAP_CONSUMER_OFFSET_RESET": "latest",
            "CDAP_LOG_LEVEL": "INFO",
            **(
                {"CDAP_JWKS_URL": f"{self.url('identity')}/.well-known/jwks.json"}
                if "identity" in self.ports
                else {}
            ),
            **({"CDAP_PORTAL_URL": self.url("portal")} if "portal" in self.ports else {}),
        }

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}-{self.run_id}{self.log_suffix}.log"

    async def replica(self, name: str, env: dict[str, str] | None = None) -> System:
        """A second replica of `name`: the same database and consumer group, its own port and log. Other
        services (and the JWKS) stay this system's; `env` adds to its settings."""
        second = System(
            admin_url=self.admin_url,
            kafka=self.kafka,
            run_id=self.run_id,
            logs=self.logs,
            log_suffix="-replica",
            common_env=self.common_env,
        )
        second.databases = {name: self.databases[name]}
        second.ports = {n: p for n, p in self.ports.items() if n != name}
        return await second.start(name, extra_env={name: env or {}})

    async def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        await asyncio.to_thread(self.processes[name].stop, sig)
        # A start-up can take well over the default 30 s on a loaded 2-core machine.
        await asyncio.to_thread(self.processes[name].start, 90)

    def wait_for_groups(self, *names: str, within: float = 60) -> None:
        """Wait until the consumer group of each service in `names` is Stable with a member (it then
        reads new events), from sync code."""
        for name in names:
            run_sync(group_joined(self.kafka, self.consumer_group(name), within))
        time.sleep(1.0)  # the first fetch fixes the start position ("latest") just after joining

    def bootstrap(self, email: str) -> str:
        """`cdap identity bootstrap --email EMAIL --json` on identity's database, as an operator runs it:
        the first CAF admin's activation token."""
        out = subprocess.run(  # noqa: S603
            [
                str(Path(sys.executable).with_name("cdap")),
                "identity",
                "bootstrap",
                "--email",
                email,
                "--json",
            ],
            env={**os.environ, "CDAP_DATABASE_URL": self.databases["identity"]},
            check=True,
            capture_output=True,
            text=True,
        )
        return str(json.loads(out.stdout.strip().splitlines()[-1])["activation_token"])

    def stop(self) -> None:
        """Stop every process, then drop the databases this system made."""
        for process in reversed(self.processes.values()):
            process.stop()
        for url in self.created:
            try:
                drop_database_sync(self.admin_url, url)
            except Exception as exc:  # a leftover database must not hide the test's own result
                print(f"could not drop {url.rsplit('/', 1)[-1]}: {exc!r}")
        self.created.clear()


async def group_joined(bootstrap: str, group: str, within: float) -> None:
    """Wait until consumer group `group` is Stable with at least one member."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **KafkaLogin.from_env().options())
    await admin.start()
    try:
        deadline = time.monotonic() + within
        last: Any = None
        while time.monotonic() < deadline:
            for response in await admin.describe_consumer_groups([group]):
                for described in response.groups:
                    last = described
                    state, members = described[2], described[5]
                    if state == "Stable" and members:
                        return
            await asyncio.sleep(0.5)
        raise AssertionError(f"consumer group {group} did not join within {within}s (last: {last!r})")
    finally:
        await admin.close()


async def wait_ready(client: httpx.AsyncClient, *urls: str, seconds: float = 30) -> None:
    """Wait until every service at `urls` answers `/ready`, then 1.5 s for their consumer groups to
    settle on their partitions (once for all: each had that long since it was ready)."""

    async def ready(url: str) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            try:
                if (await client.get(f"{url}/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
        raise AssertionError(f"{url} not ready within {seconds}s")

    await asyncio.gather(*(ready(url) for url in urls))
    await asyncio.sleep(1.5)


MAILBOX = mailbox()


async def activation_link_token(email: str, seconds: float = 20) -> str:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        # The first read parses every mail the sink ever stored (thousands, over 20 s on a loaded
        # machine): the mailbox is read once more after the deadline, so that read's time is not lost.
        expired = asyncio.get_running_loop().time() > deadline
        found = MAILBOX.to(email)
        if found:
            match = re.search(r"/activate\?token=([A-Za-z0-9_\-]+)", found[-1])
            assert match
            return match.group(1)
        if expired:
            raise AssertionError(f"no activation mail for {email}")
        await asyncio.sleep(0.2)


async def activate_and_login(client: httpx.AsyncClient, identity: str, email: str) -> dict[str, Any]:
    """As the person would: open the mailed link, choose a password, enrol TOTP if asked, log in."""
    token = await activation_link_token(email)
    r = await client.post(f"{identity}/v1/activations", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text
    secret = r.json().get("totp_secret")
    form = {"grant_type": "password", "username": email, "password": PASSWORD}
    if secret:
        form["totp"] = pyotp.TOTP(secret).now()
    login = await client.post(f"{identity}/v1/token", data=form)
    assert login.status_code == 200, login.text
    return {
        "user_id": r.json()["user_id"],
        "totp": secret,
        "headers": bearer(login.json()["access_token"]),
        "refresh": login.json().get("refresh_token"),
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def bootstrap_admin(system: System, client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """`cdap identity bootstrap --json` as an operator runs it, then activation and login."""
    token = await asyncio.to_thread(system.bootstrap, email)
    identity = system.url("identity")
    r = await client.post(f"{identity}/v1/activations", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text
    secret = r.json()["totp_secret"]
    login = await client.post(
        f"{identity}/v1/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": PASSWORD,
            "totp": pyotp.TOTP(secret).now(),
        },
    )
    assert login.status_code == 200, login.text
    return {"headers": bearer(login.json()["access_token"]), "totp": secret}


async def caf_staff(
    system: System, client: httpx.AsyncClient, admin: dict[str, Any], role: str, department: str = "76"
) -> dict[str, Any]:
    """A CAF staff member (instructor, manager, auditor...) created by the admin, activated, logged in."""
    email = f"{role.replace('_', '.')}.{new_event_id()[-10:]}@caf{department}.fr"
    r = await client.post(
        f"{system.url('identity')}/v1/users",
        headers=admin["headers"],
        json={
            "email": email,
            "family_name": role.split("_")[-1].title(),
            "given_name": "Test",
            "roles": [role],
            "department": department,
        },
    )
    assert r.status_code == 201, r.text
    return {"email": email, **await activate_and_login(client, system.url("identity"), email)}


async def partner_organisation(
    system: System, client: httpx.AsyncClient, admin: dict[str, Any], siret: str = "21760540100017"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An organisation of department 76 registered by the CAF admin, and its administrator, logged in."""
    email = f"gestion.{new_event_id()[-10:]}@partenaire.fr"
    org = await client.post(
        f"{system.url('identity')}/v1/organisations",
        headers=admin["headers"],
        json={
            "siret": siret,
            "name": "CCAS de Rouen",
            "kind": "ccas",
            "department": "76",
            "convention": {"reference": "CONV-76-CCAS", "valid_until": "2030-12-31"},
            "administrators": [{"email": email, "family_name": "Leroy", "given_name": "Anne"}],
        },
    )
    assert org.status_code == 201, org.text
    partner_admin = await activate_and_login(client, system.url("identity"), email)
    return org.json(), {"email": email, **partner_admin}


def access_request(org_id: str, applicant_email: str, profile: str, valid_until: str) -> dict[str, Any]:
    """The body a partner administrator submits for one member of staff."""
    return {
        "organisation_id": org_id,
        "profile": profile,
        "department": "76",
        "applicant": {
            "family_name": "Martin",
            "given_name": "Lou",
            "email": applicant_email,
            "job_title": "Assistant social",
        },
        "justification": "Accompagnement des familles du quartier",
        "valid_until": valid_until,
    }


async def submit_when_known(
    client: httpx.AsyncClient, access: str, headers: dict[str, str], body: dict[str, Any], seconds: float = 30
) -> httpx.Response:
    """Submit, waiting while access-requests has not yet learnt the organisation from identity's events."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        r = await client.post(f"{access}/v1/access-requests", headers=headers, json=body)
        waiting = r.status_code in (403, 422) and r.json().get("reason") in (
            "unknown_organisation",
            "not_an_administrator",
        )
        if not waiting or asyncio.get_running_loop().time() > deadline:
            return r
        await asyncio.sleep(0.3)


_ASSIGNED = re.compile(r"Setting newly assigned partitions \{(.*?)\} for group (\S+)")
_PARTITION = re.compile(r"TopicPartition\(topic='([^']+)', partition=(\d+)\)")


def assigned_partitions(log_path: Path, group: str) -> set[tuple[str, int]] | None:
    """The partitions a service process was last given in consumer group `group`, as its log says
    (aiokafka logs each assignment); None before the first assignment."""
    if not log_path.exists():
        return None
    found = [a for a in _ASSIGNED.findall(log_path.read_text(errors="replace")) if a[1] == group]
    if not found:
        return None
    return {(topic, int(p)) for topic, p in _PARTITION.findall(found[-1][0])}


async def publish_over_partitions(
    kafka: str, topic: str, make: Any, partitions: int = 6, most: int = 200
) -> list[tuple[Any, int]]:
    """Publish events `make(i)` (keyed by subject, as the services do) until every partition of `topic` got
    at least one; returns each event with the partition it landed on."""
    from cdap_shared.relay import make_producer

    producer = make_producer(kafka)
    await producer.start()
    sent: list[tuple[Any, int]] = []
    try:
        for i in range(most):
            event = make(i)
            meta = await producer.send_and_wait(topic, event.to_bytes(), key=event.subject.encode())
            sent.append((event, meta.partition))
            if len({p for _, p in sent}) == partitions:
                return sent
    finally:
        await producer.stop()
    raise AssertionError(f"{most} events did not cover the {partitions} partitions of {topic}")
