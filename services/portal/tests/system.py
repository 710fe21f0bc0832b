"""The real services as processes, for the browser tests: fresh databases, fresh topics, the portal.

Identity and dossiers publish on the shared topics (`identity.events`, `dossier.consultations`: the
topic of an event type is fixed), so the services that consume those topics start their fresh consumer
groups at the end of the log (`CDAP_CONSUMER_OFFSET_RESET=latest`), and the tests wait until each group
has joined before acting. The topics only this run uses (CAF feed, access events, alerts, checkpoints)
are fresh.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
from aiokafka.admin import AIOKafkaAdminClient

from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import make_producer
from cdap_shared.services import service
from cdap_shared.topics import ensure_topics, named
from cdap_testing import (
    MAIL_DIR,
    ServiceProcess,
    create_database_sync,
    drop_database_sync,
    free_port,
    mails_to,
    migrate,
)

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ROOT / "services"
ARTIFACTS = ROOT / "test-artifacts" / "portal"
STRONG = "Tr0ub4dor&3-horse-staple"
RUN = new_event_id().replace("-", "")[-10:]


def unique_email(who: str) -> str:
    return f"{who}.{new_event_id()[-12:]}@example.fr"


def in_thread(fn: Any, *args: Any) -> Any:
    """Call `fn` in a thread of its own: Playwright's sync API keeps an event loop running in this one,
    so `asyncio.run` (here or in the shared sync helpers) would refuse to start."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def run(coro: Any) -> Any:
    """Run a coroutine to completion from a sync fixture or test."""
    return in_thread(asyncio.run, coro)


async def _publish(bootstrap: str, topic: str, events: list[CloudEvent]) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, event.to_bytes(), key=event.subject.encode())
    finally:
        await producer.stop()


async def _group_joined(bootstrap: str, group: str, within: float) -> None:
    """Wait until consumer group `group` is Stable with at least one member (it then reads new events)."""
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


def wait_until(check: Any, within: float = 30.0, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {within}s (last: {last!r})")


def activation_link(email: str, within: float = 30.0) -> str:
    """The activation link of the newest mail sent to `email` (the SMTP sink's `.eml` files)."""

    def link() -> str | None:
        mails = mails_to(MAIL_DIR, email)
        found = re.findall(r"(http://\S+/activate\?token=[A-Za-z0-9_\-]+)", mails[-1]) if mails else []
        return found[-1] if found else None

    result: str = wait_until(link, within, what=f"activation mail to {email}")
    return result


# A family's file as the CAF core system describes it, one value in each section a profile may open.
SAMPLE_SECTIONS: dict[str, Any] = {
    "identite": {"family_name": "Lefebvre", "given_name": "Camille", "birth_date": "1985-05-14", "sex": "F"},
    "adresse": {"line": "12 rue du Gros-Horloge", "postal_code": "76000", "city": "Rouen"},
    "contact": {"telephone": "06 12 34 56 78", "email": "camille.lefebvre@example.fr"},
    "foyer": {
        "members": [
            {
                "role": "allocataire",
                "family_name": "Lefebvre",
                "given_name": "Camille",
                "birth_date": "1985-05-14",
            },
            {"role": "enfant", "family_name": "Lefebvre", "given_name": "Louis", "birth_date": "2015-09-02"},
            {"role": "enfant", "family_name": "Lefebvre", "given_name": "Inès", "birth_date": "2018-03-21"},
        ],
        "children": 2,
    },
    "ressources": {"monthly_income": 1450, "reference_year": 2025},
    "droits": [
        {"prestation": "AF", "monthly_amount": 141.99, "from": "2024-01-01", "to": None},
        {"prestation": "APL", "monthly_amount": 280, "from": "2024-01-01", "to": None},
    ],
    "paiements": [{"date": "2026-11-05", "amount": 421.99, "payee": "allocataire"}],
    "quotient_familial": {"month": "2026-11", "value": 580},
    "logement": {"status": "locataire", "aid_paid_to": "allocataire", "landlord_siret": None, "rent": 620},
    "rsa": {"referent_siret": None, "status": "sans_droit"},
}


@dataclass
class System:
    """The running services of one test module, and helpers that act as the CAF and its core system."""

    kafka: str
    admin_database: str
    log_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    topics: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    admin: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle
    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def prepare(self) -> None:
        self.ports = {name: free_port() for name in ("identity", "access", "dossiers", "audit", "portal")}
        fresh = {
            name: f"{name}.t{RUN}{secrets.token_hex(3)}" for name in ("caf", "access", "alerts", "checks")
        }
        run(
            ensure_topics(
                self.kafka, [t for name in fresh.values() for t in (name, f"{name}.dlq")], partitions=3
            )
        )
        self.topics = fresh

    def _database(self, service_dir: str) -> str:
        url: str = in_thread(create_database_sync, self.admin_database)
        self.databases.append(url)
        migrate(str(SERVICES / service_dir), url)
        return url

    def _common(self, name: str, reset: str = "latest") -> dict[str, str]:
        group = f"{name}-portal-test-{RUN}-{secrets.token_hex(3)}"
        self.groups[name] = group
        return {
            "CDAP_KAFKA_BOOTSTRAP": self.kafka,
            "CDAP_CONSUMER_GROUP": group,
            "CDAP_CONSUMER_OFFSET_RESET": reset,
            "CDAP_JWKS_URL": f"{self.url('identity')}/.well-known/jwks.json",
            "CDAP_PORTAL_URL": self.url("portal"),
            "CDAP_LOG_LEVEL": "WARNING",
        }

    def start(self, name: str, registered: str, env: dict[str, str]) -> None:
        """Start the service `registered` in cdap_shared.services, known here as `name`."""
        process = ServiceProcess(
            service(registered).package, env, self.log_dir / f"{name}.log", port=self.ports[name]
        )
        self.processes[name] = process
        process.start(wait=60)

    def start_core(self) -> None:
        """identity, dossiers and the portal (the partner user's story)."""
        identity = self._common("identity", reset="earliest")  # its topics are fresh: read them whole
        identity |= {
            "CDAP_DATABASE_URL": self._database("identity"),
            "CDAP_ACCESS_TOPIC": self.topics["access"],
            "CDAP_ALERTS_TOPIC": self.topics["alerts"],
        }
        self.start("identity", "identity", identity)
        dossiers = self._common("dossiers") | {
            "CDAP_DATABASE_URL": self._database("dossiers"),
            "CDAP_CAF_TOPIC": self.topics["caf"],
            "CDAP_IDENTITY_TOPIC": named("identity.events"),
        }
        self.start("dossiers", "dossiers", dossiers)
        self.start(
            "portal",
            "portal",
            {
                "CDAP_IDENTITY_URL": self.url("identity"),
                "CDAP_ACCESS_REQUESTS_URL": self.url("access"),
                "CDAP_DOSSIERS_URL": self.url("dossiers"),
                "CDAP_AUDIT_URL": self.url("audit"),
                "CDAP_PORTAL_SECRET": secrets.token_urlsafe(32),
                "CDAP_LOG_LEVEL": "WARNING",
            },
        )
        self.wait_for_groups("identity", "dossiers")

    def start_workflow(self) -> None:
        """access-requests and audit (the whole story, from the request to the audit trail)."""
        access = self._common("access") | {
            "CDAP_DATABASE_URL": self._database("access-requests"),
            "CDAP_IDENTITY_TOPIC": named("identity.events"),
            "CDAP_ACCESS_TOPIC": self.topics["access"],
        }
        self.start("access", "access-requests", access)
        audit = self._common("audit") | {
            "CDAP_DATABASE_URL": self._database("audit"),
            "CDAP_IDENTITY_TOPIC": named("identity.events"),
            "CDAP_ACCESS_TOPIC": self.topics["access"],
            "CDAP_CONSULTATIONS_TOPIC": named("dossier.consultations"),
            "CDAP_ALERTS_TOPIC": self.topics["alerts"],
            "CDAP_CHECKPOINTS_TOPIC": self.topics["checks"],
        }
        self.start("audit", "audit", audit)
        self.wait_for_groups("access", "audit")

    def wait_for_groups(self, *names: str) -> None:
        for name in names:
            run(_group_joined(self.kafka, self.groups[name], within=60))
        time.sleep(1.0)  # the first fetch fixes the start position ("latest") just after joining

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        for url in self.databases:
            try:
                in_thread(drop_database_sync, self.admin_database, url)
            except Exception as exc:  # a leftover database must not hide the test's own result
                print(f"could not drop {url.rsplit('/', 1)[-1]}: {exc!r}")

    # ------------------------------------------------------------------ acting as the CAF
    def bootstrap_admin(self) -> None:
        """The first CAF admin, as an operator creates it: `cdap identity bootstrap --json`."""
        email = unique_email("admin")
        env = {**os.environ, "CDAP_DATABASE_URL": self.processes["identity"].env["CDAP_DATABASE_URL"]}
        out = subprocess.run(
            [
                str(Path(sys.executable).with_name("cdap")),
                "identity",
                "bootstrap",
                "--email",
                email,
                "--json",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        created = json.loads(out.stdout.strip().splitlines()[-1])
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            r = client.post(
                "/v1/activations", json={"token": created["activation_token"], "password": STRONG}
            )
            r.raise_for_status()
            secret = r.json()["totp_secret"]
        self.admin = {"email": email, "totp": secret, "refresh": ""}

    def admin_headers(self) -> dict[str, str]:
        """A fresh admin token (refreshed each time: a test may outlive one 5-minute token)."""
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            if self.admin["refresh"]:
                form = {"grant_type": "refresh_token", "refresh_token": self.admin["refresh"]}
            else:
                code = pyotp.TOTP(self.admin["totp"]).now()
                form = {
                    "grant_type": "password",
                    "username": self.admin["email"],
                    "password": STRONG,
                    "totp": code,
                }
            r = client.post("/v1/token", data=form)
            r.raise_for_status()
        self.admin["refresh"] = r.json()["refresh_token"]
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def password_login(self, email: str) -> str:
        """What identity answers `email` signing in with the password alone (an error's description)."""
        form = {"grant_type": "password", "username": email, "password": STRONG}
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            answer = client.post("/v1/token", data=form).json()
        return str(answer.get("error_description", "signed in"))

    def create_organisation(self, siret: str, admin_email: str, kind: str = "ccas") -> dict[str, Any]:
        body = {
            "siret": siret,
            "name": "CCAS de Rouen",
            "kind": kind,
            "department": "76",
            "convention": {"reference": f"CONV-76-{siret[-4:]}", "valid_until": "2030-12-31"},
            "administrators": [{"email": admin_email, "family_name": "Durand", "given_name": "Claire"}],
        }
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            r = client.post("/v1/organisations", json=body, headers=self.admin_headers())
        assert r.status_code == 201, r.text
        return dict(r.json())

    def create_staff(self, email: str, roles: list[str], family_name: str) -> dict[str, Any]:
        body = {
            "email": email,
            "family_name": family_name,
            "given_name": "Agent",
            "roles": roles,
            "department": "76",
        }
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            r = client.post("/v1/users", json=body, headers=self.admin_headers())
        assert r.status_code == 201, r.text
        return dict(r.json())

    def approve_directly(self, organisation_id: str, email: str, profile: str = "T1") -> None:
        """What access-requests publishes once a request is approved (identity then provisions)."""
        request_id = f"req-{new_event_id()}"
        event = ev.make_event(
            "access.request.approved",
            source="/test",
            subject=request_id,
            data=ev.RequestApproved(
                request_id=request_id,
                organisation_id=organisation_id,
                profile=profile,
                department="76",
                valid_until=date.today() + timedelta(days=200),
                by="manager-test",
                applicant=ev.Applicant(
                    family_name="Petit", given_name="Jules", email=email, job_title="CESF"
                ),
            ),
        )
        run(_publish(self.kafka, self.topics["access"], [event]))

    def publish_dossier(self, numero: str, department: str = "76", **overrides: Any) -> ev.DossierUpserted:
        """What the CAF core system publishes: one dossier on the CAF feed, every section filled (the
        event's model is the contract; the portal's tests need no service's code to write one)."""
        nir = f"28505{department}{numero[-6:]}"  # a woman born in May 1985, and the NIR's key below
        data = ev.DossierUpserted(
            numero=numero,
            nir=f"{nir}{97 - int(nir) % 97:02d}",
            department=department,
            version=1,
            opposition=False,
            sections=SAMPLE_SECTIONS,
        ).model_copy(update=overrides)
        event = ev.make_event("caf.dossier.upserted", source="/caf/core", subject=numero, data=data)
        run(_publish(self.kafka, self.topics["caf"], [event]))
        return data
