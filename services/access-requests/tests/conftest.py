"""A running access-requests service (real PostgreSQL and Kafka, own database and topics) and its actors."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from sqlalchemy import func, select

from cdap_access import handlers
from cdap_access.app import build
from cdap_access.config import Settings
from cdap_access.models import AccessRequest, Document, HistoryEntry
from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_shared.mail import QueuedMail
from cdap_shared.outbox import OutboxRecord
from cdap_testing import MAIL_DIR, InProcess, TokenMinter, eventually, mails_to

SERVICE_DIR = str(Path(__file__).resolve().parents[1])
ORG = "org-76-ccas"
OTHER_ORG = "org-27-bailleur"
PARTNER = "partner-admin-1"


def pdf_file(catalog_extra: bytes = b"", page_extra: bytes = b"", *extra_objects: bytes) -> bytes:
    """A well-formed one-page PDF (objects 1-3), with `extra_objects` numbered from 4."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b" >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] " + page_extra + b" >>",
        *extra_objects,
    ]
    out = b"%PDF-1.7\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


PDF = pdf_file()


@dataclass(kw_only=True)
class Service(InProcess):
    settings: Settings
    minter: TokenMinter
    tag: str  # makes this test's mail addresses unique in the shared SMTP sink

    # ------------------------------------------------------------------ actors
    def headers(self, sub: str, roles: list[str], **claims: str | None) -> dict[str, str]:
        """A token as identity signs it; a claim given as None (no department, no e-mail) is left out."""
        given = {name: value for name, value in claims.items() if value is not None}
        return {"Authorization": f"Bearer {self.minter.mint(sub, roles=roles, **given)}"}

    def partner_email(self, sub: str = PARTNER) -> str:
        return f"{sub}-{self.tag}@partner.test"

    def partner(self, sub: str = PARTNER, org: str = ORG) -> dict[str, str]:
        return self.headers(sub, ["partner_admin"], org=org, email=self.partner_email(sub))

    def instructor(self, sub: str = "instructor-1", department: str = "76") -> dict[str, str]:
        return self.headers(sub, ["caf_instructor"], department=department)

    def manager(self, sub: str = "manager-1", department: str = "76") -> dict[str, str]:
        return self.headers(sub, ["caf_manager"], department=department)

    def mailbox(self, who: str, department: str = "76") -> str:
        template = (
            self.settings.instructors_mailbox if who == "instructors" else self.settings.managers_mailbox
        )
        return template.format(department=department)

    # ------------------------------------------------------------------ setup
    async def apply(self, event_type: str, subject: str, data: ev.EventData) -> None:
        """Feed identity's event through the consumer's own handler (no Kafka round trip)."""
        event = ev.make_event(event_type, source="/test", subject=subject, data=data)
        async with self.app.state.sessions() as session, session.begin():
            await handlers.handler(self.settings)(session, event)

    async def publish(self, event_type: str, subject: str, data: ev.EventData) -> CloudEvent:
        """Publish as identity would, on this test's identity topic."""
        event = ev.make_event(event_type, source="/cdap/identity", subject=subject, data=data)
        await self.producer.send_and_wait(
            self.settings.identity_topic, event.to_bytes(), key=subject.encode()
        )
        return event

    async def organisation(self, org: str = ORG, **overrides: Any) -> ev.OrganisationRegistered:
        data = ev.OrganisationRegistered(
            **{
                "organisation_id": org,
                "siret": "21760540100033",
                "name": "CCAS de Rouen",
                "kind": "social_services",
                "department": "76",
                "convention_reference": "CONV-76-2026-001",
                "convention_valid_until": date.today() + timedelta(days=730),
                "administrators": [PARTNER, "partner-admin-2"],
                **overrides,
            }
        )
        await self.apply("identity.organisation.registered", org, data)
        return data

    def submission(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "organisation_id": ORG,
            "applicant": {
                "family_name": "Martin",
                "given_name": "Claire",
                "email": f"claire.martin-{self.tag}@ccas-rouen.test",
                "job_title": "Assistante sociale",
            },
            "profile": "T1",
            "department": "76",
            "justification": "Accompagnement social des familles du quartier",
            "valid_until": (date.today() + timedelta(days=180)).isoformat(),
        }
        body.update(overrides)
        return body

    async def submit(self, headers: dict[str, str] | None = None, **overrides: Any) -> str:
        r = await self.client.post(
            "/v1/access-requests", json=self.submission(**overrides), headers=headers or self.partner()
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def decide(
        self, request_id: str, headers: dict[str, str], decision: str = "approve", **body: Any
    ) -> Response:
        return await self.client.post(
            f"/v1/access-requests/{request_id}/decisions",
            json={"decision": decision, **body},
            headers=headers,
        )

    async def upload(
        self,
        request_id: str,
        files: list[tuple[str, bytes]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        parts = [
            ("files", (name, content, "application/pdf"))
            for name, content in (files or [("convention.pdf", PDF)])
        ]
        return await self.client.post(
            f"/v1/access-requests/{request_id}/documents", files=parts, headers=headers or self.partner()
        )

    async def get(self, request_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = await self.client.get(f"/v1/access-requests/{request_id}", headers=headers or self.instructor())
        assert r.status_code == 200, r.text
        return dict(r.json())

    # ------------------------------------------------------------------ inspection
    async def snapshot(self, request_id: str | None = None) -> dict[str, Any]:
        """What a refused call must leave untouched: the request, its history, documents, outboxes."""
        async with self.app.state.sessions() as s:

            async def count(model: Any, *where: Any) -> int:
                return int(
                    (await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one()
                )

            row = await s.get(AccessRequest, request_id) if request_id else None
            return {
                "request": row.model_dump() if row else None,
                "requests": await count(AccessRequest),
                "history": await count(HistoryEntry),
                "documents": await count(Document),
                "outbox": await count(OutboxRecord),
                "mails": await count(QueuedMail),
            }


def assert_problem(r: Response, status: int, reason: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and machine-readable reason)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json", r.headers["content-type"]
    body = dict(r.json())
    assert body["status"] == status and body["title"]
    if reason is not None:
        assert body.get("reason") == reason, body
    return body


@pytest.fixture
async def service_factory(
    stack: dict[str, str],
    migrated_database: Callable[[str], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    start_app: Callable[..., Awaitable[Service]],
) -> Callable[..., Awaitable[Service]]:
    async def make(**overrides: Any) -> Service:
        tag = new_event_id().replace("-", "")[-12:]
        settings = Settings(
            **{
                "database_url": await migrated_database(SERVICE_DIR),
                "kafka_bootstrap": stack["kafka"],
                "identity_topic": await make_topic("identity.events"),
                "access_topic": await make_topic("access.events"),
                "consumer_group": f"access-requests-{random.random()}",
                "instructors_mailbox": f"instruction-caf{{department}}-{tag}@cdap.local",
                "managers_mailbox": f"habilitations-caf{{department}}-{tag}@cdap.local",
                "scheduler_interval_seconds": 0,
                "mail_poll_seconds": 0.2,
                **overrides,
            }
        )
        minter = TokenMinter()
        app = build(settings, verifier=minter.verifier())
        return await start_app(
            Service, app, "http://access-requests", settings=settings, minter=minter, tag=tag
        )

    return make


@pytest.fixture
async def svc(service_factory: Callable[..., Awaitable[Service]]) -> Service:
    """A service that knows organisation `ORG` (department 76; administrators PARTNER, partner-admin-2)."""
    service = await service_factory()
    await service.organisation()
    return service


@pytest.fixture
async def svc_without_organisation(service_factory: Callable[..., Awaitable[Service]]) -> Service:
    """A service that learns its organisations from Kafka, as in production."""
    return await service_factory()


async def mail_with(address: str, *texts: str, within: float = 20.0) -> str:
    """Wait until the SMTP sink holds a mail to `address` containing every one of `texts`; return it."""

    async def found() -> str | None:
        return next((m for m in mails_to(MAIL_DIR, address) if all(t in m for t in texts)), None)

    mail: str = await eventually(found, within=within)
    return mail
