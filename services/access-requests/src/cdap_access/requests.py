"""Use cases behind the write routes: load, ask the domain, record the step; each is one transaction's work.

They write without committing (the caller that opened the transaction commits: `idempotency.run_once`
for HTTP commands) and return what they changed, in the domain's terms. A refusal is a `domain.Refused`
raised before anything is written, so a refused call changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict, dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_access import domain, pdf, store
from cdap_access.calendar import local_date
from cdap_access.config import Context
from cdap_access.domain import Conflict, Decision, DocumentTooLarge, Unknown
from cdap_access.models import AccessRequest, Document, HistoryEntry, PartnerOrganisation
from cdap_access.notifications import INSTRUCTORS, PARTNER, stage_queue
from cdap_shared.actor import Actor
from cdap_shared.envelope import new_event_id


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
class Received:
    """Documents recorded on a request, and the request after them."""

    request: AccessRequest
    documents: list[Document]


@dataclass(frozen=True)
class Upload:
    filename: str
    content: bytes  # at most max_document_bytes + 1: enough to know it is too big


async def get_request(session: AsyncSession, request_id: str) -> AccessRequest:
    row = await store.load(session, request_id)
    if row is None:
        raise Unknown("unknown_request", "No access request has this id.")
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
) -> AccessRequest:
    """A partner administrator's request enters the stage-1 queue."""
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
        raise Conflict("duplicate_request", f"Request {duplicate} for this person and profile is open.")
    row = store.new_request(
        ctx.settings,
        now=now,
        id=new_event_id(),
        **asdict(form),
        sensitive=ctx.catalogue.is_sensitive(form.profile),
        submitted_by=actor.sub,
    )
    await store.insert_request(session, ctx.settings, row, actor=actor.sub, now=now)
    return row


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
) -> AccessRequest:
    """An approver's decision, refused if the request changed since `expected_version` was read."""
    row = await get_request(session, request_id)
    step = domain.decide(store.facts_of(row), actor, decision, comment=comment, documents=tuple(documents))
    if expected_version is not None and expected_version != row.version:
        raise Conflict("stale_version", "The request changed since you read it; reload it.")
    await store.record_step(
        session, ctx.settings, row, step, actor=actor.sub, now=now, comment=comment, documents=documents
    )
    return row


def check_upload(upload: Upload, limit: int) -> None:
    """Refuse a document over `limit` bytes, or one that is not a harmless PDF."""
    if len(upload.content) > limit:
        raise DocumentTooLarge("document_too_large", f"{upload.filename} is over {limit} bytes.")
    pdf.check(upload.content, upload.filename)


async def check_uploader(session: AsyncSession, actor: Actor, request_id: str) -> None:
    """Refuse early, before the files are read: only the request's partner may send them."""
    domain.receive_documents(store.facts_of(await get_request(session, request_id)), actor)


async def upload_documents(
    session: AsyncSession, ctx: Context, actor: Actor, request_id: str, uploads: list[Upload], now: datetime
) -> Received:
    """The partner's documents, each checked, stored with the step they make."""
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
    return Received(row, documents)


async def withdraw(
    session: AsyncSession, ctx: Context, actor: Actor, request_id: str, comment: str | None, now: datetime
) -> AccessRequest:
    """The partner administrator withdraws a request that is still open."""
    row = await get_request(session, request_id)
    step = domain.withdraw(store.facts_of(row), actor)
    await store.record_step(session, ctx.settings, row, step, actor=actor.sub, now=now, comment=comment)
    return row


async def add_comment(
    session: AsyncSession, ctx: Context, actor: Actor, request_id: str, text: str, now: datetime
) -> HistoryEntry:
    """A message in the request's thread; it goes to the other side (the partner, or the CAF queue)."""
    row = await get_request(session, request_id)
    domain.check_reader(store.facts_of(row), actor)
    from_partner = domain.PARTNER_ADMIN in actor.roles and actor.org == row.organisation_id
    recipients = (stage_queue(row.stage) if row.stage else INSTRUCTORS,) if from_partner else (PARTNER,)
    return await store.record_note(
        session,
        ctx.settings,
        row,
        action="commented",
        actor=actor.sub,
        now=now,
        comment=text,
        recipients=recipients,
    )
