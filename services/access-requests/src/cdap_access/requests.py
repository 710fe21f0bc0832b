"""Service functions behind the write routes: load, ask the domain, record the step.

They write without committing (`idempotency.run_once` commits) and return `(status, body)`. A refusal
is raised before anything is written, so a refused call changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_access import domain, pdf, store
from cdap_access.calendar import local_date
from cdap_access.config import Settings
from cdap_access.domain import Actor, Decision, Refused
from cdap_access.models import AccessRequest, Document, PartnerOrganisation
from cdap_access.notifications import INSTRUCTORS, PARTNER, stage_queue
from cdap_access.profiles import Catalogue
from cdap_shared.auth import Principal
from cdap_shared.envelope import new_event_id
from cdap_shared.problems import Problem

Outcome = tuple[int, dict[str, Any]]
PDF_REFUSALS = {
    "not_a_pdf": (415, "Not a PDF", "is not a PDF document."),
    "unreadable_pdf": (422, "Unreadable PDF", "cannot be read as a PDF (damaged, encrypted or no page)."),
    "active_pdf_content": (422, "Active PDF content", "contains JavaScript or actions that run."),
}


@dataclass(frozen=True)
class Context:
    """What the service functions need besides the session: settings and the profile catalogue."""

    settings: Settings
    catalogue: Catalogue


@dataclass(frozen=True)
class Submission:
    organisation_id: str
    applicant: dict[str, str]
    profile: str
    department: str
    justification: str
    valid_until: date
    contact_email: str | None


@dataclass(frozen=True)
class Upload:
    filename: str
    content: bytes  # at most max_document_bytes + 1: enough to know it is too big


def actor_of(principal: Principal) -> Actor:
    email = principal.claims.get("email")
    return Actor(
        principal.sub,
        principal.roles,
        principal.org,
        principal.department,
        email.lower() if isinstance(email, str) else None,
    )


def summary(row: AccessRequest) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": row.state,
        "stage": row.stage,
        "due": row.due.isoformat() if row.due else None,
        "version": row.version,
    }


async def get_request(session: AsyncSession, request_id: str) -> AccessRequest:
    row = await store.load(session, request_id)
    if row is None:
        raise Problem(404, "Not found", "No access request has this id.", reason="unknown_request")
    return row


def organisation_of(row: PartnerOrganisation | None) -> domain.Organisation | None:
    if row is None:
        return None
    return domain.Organisation(
        row.organisation_id,
        row.department,
        row.convention_valid_until,
        frozenset(row.administrators),
        row.delegation_withdrawn,
    )


async def submit(
    session: AsyncSession, ctx: Context, actor: Actor, form: Submission, now: datetime
) -> Outcome:
    organisation = organisation_of(await session.get(PartnerOrganisation, form.organisation_id))
    domain.check_submission(
        actor,
        organisation,
        organisation_id=form.organisation_id,
        department=form.department,
        profile_known=form.profile in ctx.catalogue.profiles,
        valid_until=form.valid_until,
        today=local_date(now, ctx.settings.timezone),
    )
    duplicate = await session.scalar(
        select(col(AccessRequest.id)).where(
            col(AccessRequest.organisation_id) == form.organisation_id,
            col(AccessRequest.profile) == form.profile,
            col(AccessRequest.state).in_([s.value for s in domain.OPEN]),
            col(AccessRequest.applicant_email) == form.applicant["email"].lower(),
        )
    )
    if duplicate is not None:
        raise Refused(409, "duplicate_request", f"Request {duplicate} for this person and profile is open.")
    row = store.new_request(
        ctx.settings,
        now=now,
        id=new_event_id(),
        organisation_id=form.organisation_id,
        applicant=form.applicant,
        profile=form.profile,
        department=form.department,
        justification=form.justification,
        valid_until=form.valid_until,
        sensitive=ctx.catalogue.is_sensitive(form.profile),
        submitted_by=actor.sub,
        contact_email=form.contact_email,
    )
    await store.insert_request(session, ctx.settings, row, actor=actor.sub, now=now)
    return 201, summary(row)


async def decide(
    session: AsyncSession,
    ctx: Context,
    actor: Actor,
    request_id: str,
    *,
    decision: Decision,
    comment: str | None,
    documents: list[str],
    expected_version: int | None,
    now: datetime,
) -> Outcome:
    row = await get_request(session, request_id)
    step = domain.decide(store.facts_of(row), actor, decision, comment=comment, documents=tuple(documents))
    if expected_version is not None and expected_version != row.version:
        raise Problem(
            409, "Conflict", "The request changed since you read it; reload it.", reason="stale_version"
        )
    await store.record_step(
        session, ctx.settings, row, step, actor=actor.sub, now=now, comment=comment, documents=documents
    )
    return 200, summary(row)


def check_upload(upload: Upload, limit: int) -> None:
    if len(upload.content) > limit:
        raise Problem(
            413,
            "Document too large",
            f"{upload.filename} is over {limit} bytes.",
            reason="document_too_large",
        )
    try:
        pdf.check(upload.content)
    except pdf.Unacceptable as refused:
        status, title, detail = PDF_REFUSALS[refused.reason]
        raise Problem(status, title, f"{upload.filename} {detail}", reason=refused.reason) from None


async def check_uploader(session: AsyncSession, actor: Actor, request_id: str) -> None:
    """Refuse early, before the files are read: only the request's partner may send them."""
    domain.receive_documents(store.facts_of(await get_request(session, request_id)), actor)


async def upload_documents(
    session: AsyncSession, ctx: Context, actor: Actor, request_id: str, uploads: list[Upload], now: datetime
) -> Outcome:
    row = await get_request(session, request_id)
    step = domain.receive_documents(store.facts_of(row), actor)
    for upload in uploads:  # parsing a PDF takes CPU time (seconds for a crafted 10 MiB): off the loop
        await asyncio.to_thread(check_upload, upload, ctx.settings.max_document_bytes)
    documents = [
        Document(
            id=new_event_id(),
            request_id=row.id,
            filename=u.filename,
            size=len(u.content),
            sha256=hashlib.sha256(u.content).hexdigest(),
            content=u.content,
            uploaded_by=actor.sub,
            uploaded_at=now,
        )
        for u in uploads
    ]
    session.add_all(documents)
    names = [d.filename for d in documents]
    await store.record_step(session, ctx.settings, row, step, actor=actor.sub, now=now, documents=names)
    listed = [{"id": d.id, "filename": d.filename, "size": d.size, "sha256": d.sha256} for d in documents]
    return 201, summary(row) | {"documents": listed}


async def withdraw(
    session: AsyncSession, ctx: Context, actor: Actor, request_id: str, comment: str | None, now: datetime
) -> Outcome:
    row = await get_request(session, request_id)
    step = domain.withdraw(store.facts_of(row), actor)
    await store.record_step(session, ctx.settings, row, step, actor=actor.sub, now=now, comment=comment)
    return 200, summary(row)


async def add_comment(
    session: AsyncSession, ctx: Context, actor: Actor, request_id: str, text: str, now: datetime
) -> Outcome:
    """A message in the request's thread; it goes to the other side (the partner, or the CAF queue)."""
    row = await get_request(session, request_id)
    domain.check_reader(store.facts_of(row), actor)
    from_partner = domain.PARTNER_ADMIN in actor.roles and actor.org == row.organisation_id
    recipients = (stage_queue(row.stage) if row.stage else INSTRUCTORS,) if from_partner else (PARTNER,)
    await store.record_note(
        session,
        ctx.settings,
        row,
        action="commented",
        actor=actor.sub,
        now=now,
        comment=text,
        recipients=recipients,
    )
    return 201, {"at": now.isoformat(), "actor": actor.sub, "action": "commented", "comment": text}
