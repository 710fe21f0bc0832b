"""`cdap demo`: demo data for the CAF of Seine-Maritime through the public APIs, and the scripted story.

Seeding (idempotent: it is skipped when `.stack/demo.json` says it was done against these databases):
a CAF admin, an instructor, a manager and an auditor; one organisation of each kind with its
administrator; one staff member per organisation whose access request goes through the real workflow;
10,000 synthetic dossiers. Every password is DEMO_PASSWORD; accounts that must use TOTP have their
secret in `.stack/demo.json` (`cdap demo totp EMAIL` prints the current code).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp

from cdap_cli.mailsink import mail_dir, mails_to
from cdap_shared.services import local_url

ROOT = Path(__file__).resolve().parents[3]
STATE = Path(os.environ.get("CDAP_DEMO_STATE", str(ROOT / ".stack" / "demo.json")))
DEMO_PASSWORD = "Demo-CDAP-Seine-76!"
DEPARTMENT = "76"

ORGANISATIONS = (
    # siret, name, kind, admin e-mail, staff e-mail, profile, job title
    (
        "21760540100017",
        "CCAS de Rouen",
        "ccas",
        "gestion@ccas-rouen.demo",
        "assistante@ccas-rouen.demo",
        "T1",
        "Assistante sociale",
    ),
    (
        "78285238800019",
        "Rouen Habitat",
        "bailleur",
        "gestion@rouen-habitat.demo",
        "gestion-apl@rouen-habitat.demo",
        "T2",
        "Chargé de gestion locative",
    ),
    (
        "33012345600015",
        "Vacances Normandie",
        "vacances",
        "gestion@vacances-normandie.demo",
        "accueil@vacances-normandie.demo",
        "T3",
        "Chargée d'accueil",
    ),
    (
        "44012345300019",
        "Crèches de Rouen",
        "petite_enfance",
        "gestion@creches-rouen.demo",
        "direction@creches-rouen.demo",
        "T4",
        "Directrice de crèche",
    ),
    (
        "22760540900019",
        "Département de la Seine-Maritime",
        "conseil_departemental",
        "gestion@seinemaritime.demo",
        "referent-rsa@seinemaritime.demo",
        "T5",
        "Référent RSA",
    ),
)

# A one-page PDF, well formed (access-requests parses every upload and refuses what does not parse).
CONVENTION_PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
    b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>\nendobj\n"
    b"xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n0000000115 00000 n \n"
    b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n186\n%%EOF\n"
)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).rstrip("/")


@dataclass
class Urls:
    """Where the services answer (the portal's settings names, so one environment serves both)."""

    identity: str = field(default_factory=lambda: _env("CDAP_IDENTITY_URL", local_url("identity")))
    access: str = field(
        default_factory=lambda: _env("CDAP_ACCESS_REQUESTS_URL", local_url("access-requests"))
    )
    dossiers: str = field(default_factory=lambda: _env("CDAP_DOSSIERS_URL", local_url("dossiers")))
    audit: str = field(default_factory=lambda: _env("CDAP_AUDIT_URL", local_url("audit")))
    portal: str = field(default_factory=lambda: _env("CDAP_PORTAL_URL", local_url("portal")))


@dataclass
class Account:
    email: str
    role: str
    user_id: str | None = None
    totp: str | None = None
    organisation_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Demo:
    urls: Urls
    client: httpx.AsyncClient
    say: Any = print
    accounts: dict[str, Account] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)
    _mail_seen: dict[str, int] = field(default_factory=dict)

    # -------------------------------------------------------------- helpers
    async def check(self, response: httpx.Response, step: str, *expected: int) -> dict[str, Any]:
        if response.status_code not in (expected or (200, 201)):
            raise DemoError(f"{step}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else {}

    def _mails(self, email: str) -> list[str]:
        return mails_to(str(mail_dir(1025, ROOT / ".stack" / "mail")), email)

    def expect_mail(self, email: str) -> None:
        """Note the mails `email` already has, before an action that mails it (earlier runs left some)."""
        self._mail_seen[email] = len(self._mails(email))

    async def mailed_token(self, email: str, seconds: float = 30) -> str:
        """The activation link mailed to `email` since `expect_mail`, read from the SMTP sink as a person
        reads their mailbox."""
        for _ in range(int(seconds / 0.3)):
            found = self._mails(email)
            if len(found) > self._mail_seen.get(email, 0):
                match = re.search(r"/activate\?token=([A-Za-z0-9_\-]+)", found[-1])
                if match:
                    return match.group(1)
            await asyncio.sleep(0.3)
        raise DemoError(f"no new activation mail for {email} in the SMTP sink's folder")

    async def activate(self, account: Account, token: str | None = None) -> None:
        token = token or await self.mailed_token(account.email)
        body = await self.check(
            await self.client.post(
                f"{self.urls.identity}/v1/activations", json={"token": token, "password": DEMO_PASSWORD}
            ),
            f"activate {account.email}",
        )
        account.user_id, account.totp = body["user_id"], body.get("totp_secret")
        self.accounts[account.email] = account

    async def headers(self, email: str) -> dict[str, str]:
        """A bearer token for `email` (log in once; TOTP codes are never replayed)."""
        if email not in self._tokens:
            account = self.accounts[email]
            for attempt in range(3):
                form = {"grant_type": "password", "username": email, "password": DEMO_PASSWORD}
                if account.totp:
                    form["totp"] = pyotp.TOTP(account.totp).now()
                r = await self.client.post(f"{self.urls.identity}/v1/token", data=form)
                if r.status_code == 200:
                    self._tokens[email] = r.json()["access_token"]
                    break
                if attempt == 2 or not account.totp:
                    raise DemoError(f"login {email}: {r.text[:200]}")
                await asyncio.sleep(31 - (int(asyncio.get_running_loop().time()) % 30))  # next TOTP step
        return {"Authorization": f"Bearer {self._tokens[email]}"}

    # -------------------------------------------------------------- workflow
    async def request_and_approve(
        self, admin: str, org_id: str, applicant: str, profile: str, job: str, documents: bool = False
    ) -> str:
        """A partner admin asks; the instructor (after documents, if asked) and the manager approve."""
        family, given = applicant.split("@")[0].split("-")[0].title(), "Demo"
        body = {
            "organisation_id": org_id,
            "profile": profile,
            "department": DEPARTMENT,
            "applicant": {"family_name": family, "given_name": given, "email": applicant, "job_title": job},
            "justification": f"Accès {profile} pour {job.lower()}",
            "valid_until": (date.today() + timedelta(days=300)).isoformat(),
        }
        for _ in range(100):  # access-requests learns the organisation from identity's events
            r = await self.client.post(
                f"{self.urls.access}/v1/access-requests", headers=await self.headers(admin), json=body
            )
            if r.status_code != 422 or r.json().get("reason") not in (
                "unknown_organisation",
                "not_an_administrator",
            ):
                break
            await asyncio.sleep(0.2)
        request = await self.check(r, f"{admin} requests {profile} for {applicant}", 201)
        rid = str(request["id"])
        decide = f"{self.urls.access}/v1/access-requests/{rid}/decisions"
        instructor = await self.headers("instructeur@caf76.demo")
        if documents:
            await self.check(
                await self.client.post(
                    decide,
                    headers=instructor,
                    json={
                        "decision": "request_documents",
                        "comment": "Merci de joindre la convention signée",
                        "documents": ["convention signée"],
                    },
                ),
                "instructor requests documents",
            )
            pdf = CONVENTION_PDF
            await self.check(
                await self.client.post(
                    f"{self.urls.access}/v1/access-requests/{rid}/documents",
                    headers=await self.headers(admin),
                    files={"files": ("convention.pdf", pdf, "application/pdf")},
                ),
                "partner uploads the convention",
                201,
            )
        await self.check(
            await self.client.post(
                decide,
                headers=instructor,
                json={"decision": "approve", "comment": "Le poste correspond au profil"},
            ),
            "instructor approves (stage 1)",
        )
        read = f"{self.urls.access}/v1/access-requests/{rid}"

        async def state_now() -> str:
            return str(
                (await self.check(await self.client.get(read, headers=instructor), "read request"))["state"]
            )

        if await state_now() == "awaiting_second_approval":
            await self.check(
                await self.client.post(
                    decide,
                    headers=await self.headers("manager@caf76.demo"),
                    json={"decision": "approve", "comment": "Validé"},
                ),
                "manager approves (stage 2)",
            )
        state = "approved"
        for _ in range(100):
            if (state := await state_now()) == "provisioned":
                return rid
            await asyncio.sleep(0.2)
        raise DemoError(f"request {rid} for {applicant} is {state}, not provisioned, after 20 s")

    # -------------------------------------------------------------- seed
    async def seed(self, bootstrap_admin: Any, dossier_count: int) -> None:
        self.say("CAF de la Seine-Maritime: administrator, instructor, manager, auditor")
        admin = Account("admin@caf76.demo", "caf_admin")
        await self.activate(admin, await bootstrap_admin(admin.email))
        staff = (
            ("instructeur@caf76.demo", "caf_instructor"),
            ("manager@caf76.demo", "caf_manager"),
            ("auditeur@caf76.demo", "auditor"),
        )
        for email, role in staff:
            self.expect_mail(email)
            await self.check(
                await self.client.post(
                    f"{self.urls.identity}/v1/users",
                    headers=await self.headers(admin.email),
                    json={
                        "email": email,
                        "family_name": role.split("_")[-1].title(),
                        "given_name": "Demo",
                        "roles": [role],
                        "department": DEPARTMENT,
                    },
                ),
                f"create {email}",
                201,
            )
            await self.activate(Account(email, role))
        for siret, name, kind, admin_email, staff_email, profile, job in ORGANISATIONS:
            self.say(f"{name}: organisation, administrator, {profile} access for {staff_email}")
            self.expect_mail(admin_email)
            self.expect_mail(staff_email)
            org = await self.check(
                await self.client.post(
                    f"{self.urls.identity}/v1/organisations",
                    headers=await self.headers(admin.email),
                    json={
                        "siret": siret,
                        "name": name,
                        "kind": kind,
                        "department": DEPARTMENT,
                        "convention": {"reference": f"CONV-76-{kind.upper()}", "valid_until": "2030-12-31"},
                        "administrators": [
                            {"email": admin_email, "family_name": "Gestion", "given_name": name}
                        ],
                    },
                ),
                f"register {name}",
                201,
            )
            await self.activate(Account(admin_email, "partner_admin", organisation_id=org["id"]))
            await self.request_and_approve(admin_email, org["id"], staff_email, profile, job)
            await self.activate(Account(staff_email, f"partner_user ({profile})", organisation_id=org["id"]))
        self.say(f"CAF feed: {dossier_count:,} synthetic dossiers")
        from cdap_cli.caf_feed import publish

        await publish(
            dossier_count,
            bootstrap="127.0.0.1:9092",
            department=DEPARTMENT,
            seed=76,
            landlords=["78285238800019"],
            rsa_referents=["22760540900019"],
        )

    def save(self) -> None:
        STATE.parent.mkdir(exist_ok=True)
        STATE.write_text(
            json.dumps(
                {"password": DEMO_PASSWORD, "accounts": [a.as_dict() for a in self.accounts.values()]},
                indent=2,
            )
        )

    # -------------------------------------------------------------- scenario
    async def scenario(self) -> None:
        """The story of issue 7, end to end through the public APIs."""
        run = str(int(asyncio.get_running_loop().time() * 1000))[-6:]
        ccas_admin = "gestion@ccas-rouen.demo"
        org_id = self.accounts[ccas_admin].organisation_id
        assert org_id
        applicant = f"travailleur-{run}@ccas-rouen.demo"
        self.expect_mail(applicant)
        self.say("1. the CCAS administrator requests a T1 access; the instructor asks for documents;")
        self.say("   the CCAS uploads them; the instructor and the manager approve; identity provisions")
        await self.request_and_approve(
            ccas_admin, org_id, applicant, "T1", "Travailleur social", documents=True
        )
        self.say("2. the new social worker activates the account from the mail (TOTP) and looks up a dossier")
        await self.activate(Account(applicant, "partner_user (T1)", organisation_id=org_id))
        numero, audit_id = await self.first_granted_lookup(applicant)
        self.say(f"   dossier {numero} shown, consultation recorded as {audit_id}")
        self.say(
            "3. the auditor finds that consultation, with its trace id, and verifies its inclusion proof"
        )
        await self.audit_check(numero, audit_id)

    async def first_granted_lookup(self, email: str) -> tuple[str, str]:
        headers = await self.headers(email)
        for n in range(1_000_000, 1_000_200):
            r = await self.client.get(
                f"{self.urls.dossiers}/v1/dossiers/{n:07d}",
                params={"motif": "accompagnement_social"},
                headers=headers,
            )
            if r.status_code == 200:
                return f"{n:07d}", r.headers["X-Audit-Id"]
            if r.status_code not in (403, 404):
                raise DemoError(f"lookup {n}: HTTP {r.status_code} {r.text[:200]}")
        raise DemoError("no dossier could be consulted: were the demo dossiers published?")

    async def audit_check(self, numero: str, audit_id: str) -> None:
        from cdap_shared.tlog.checkpoint import NoteVerifier, open_note
        from cdap_shared.tlog.merkle import leaf_hash, verify_inclusion

        headers = await self.headers("auditeur@caf76.demo")
        entry = None
        for _ in range(100):
            r = await self.client.get(
                f"{self.urls.audit}/v1/dossiers/{numero}/consultations", headers=headers
            )
            body = await self.check(r, "auditor lists the dossier's consultations")
            entry = next((e for e in body.get("items", []) if e["event_id"] == audit_id), None)
            if entry:
                break
            await asyncio.sleep(0.2)
        if entry is None or not entry.get("trace_id"):
            raise DemoError(f"consultation {audit_id} not in the audit log (or without trace id)")
        self.say(f"   audit entry {entry['index']}, trace {entry['trace_id']}")
        import base64

        key = (await self.client.get(f"{self.urls.audit}/v1/checkpoints/key", headers=headers)).text.strip()
        for _ in range(50):
            checkpoint = await self.check(
                await self.client.get(
                    f"{self.urls.audit}/v1/checkpoints/latest",
                    headers={**headers, "Accept": "application/json"},
                ),
                "latest checkpoint",
            )
            if checkpoint["tree_size"] > entry["index"]:
                break
            await asyncio.sleep(0.2)
        open_note(checkpoint["note"], NoteVerifier.from_key(key))
        proof = await self.check(
            await self.client.get(
                f"{self.urls.audit}/v1/proofs/inclusion",
                headers=headers,
                params={"index": entry["index"], "tree_size": checkpoint["tree_size"]},
            ),
            "inclusion proof",
        )
        ok = verify_inclusion(
            leaf_hash(base64.b64decode(entry["leaf"])),
            entry["index"],
            checkpoint["tree_size"],
            [base64.b64decode(h) for h in proof["hashes"]],
            base64.b64decode(checkpoint["root_hash"]),
        )
        if not ok:
            raise DemoError("the inclusion proof does not verify against the signed checkpoint")
        self.say(
            f"   inclusion proof verified against the signed checkpoint of size {checkpoint['tree_size']}"
        )


def load_state(demo: Demo) -> bool:
    if not STATE.exists():
        return False
    data = json.loads(STATE.read_text())
    for a in data["accounts"]:
        demo.accounts[a["email"]] = Account(**a)
    return True
