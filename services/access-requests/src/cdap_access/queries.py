"""Reading requests: the approvers' queue (keyset-paginated), one request with its history, a document.

Approvers see their own department's requests only, partner administrators their organisation's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_access import domain, store
from cdap_access.domain import Actor, NotPermitted, Unknown
from cdap_access.models import AccessRequest, Document, HistoryEntry
from cdap_access.requests import get_request

QueueKey = tuple[date | None, str]  # (due, id): where a page of the queue ends


@dataclass(frozen=True)
class Page:
    """Queue items, and the key of the last one when more follow."""

    items: list[dict[str, Any]]
    last: QueueKey | None


def visibility(actor: Actor, department: str | None) -> list[ColumnElement[bool]]:
    """The filter that keeps `actor` inside its department (CAF staff) or organisation (partner)."""
    if domain.PARTNER_ADMIN in actor.roles and actor.org is not None:
        scope = [col(AccessRequest.organisation_id) == actor.org]
        return scope + ([col(AccessRequest.department) == department] if department else [])
    if not actor.roles & domain.STAFF_READER_ROLES:
        raise NotPermitted("role_not_allowed", "Your role does not allow reading access requests.")
    if actor.department is None or (department is not None and department != actor.department):
        raise NotPermitted("other_department", "You may read your own department's requests only.")
    return [col(AccessRequest.department) == actor.department]


def after(key: QueueKey) -> ColumnElement[bool]:
    """Rows after `key` in (due ascending, NULLs last; id) order."""
    due, request_id = key
    due_col, id_col = col(AccessRequest.due), col(AccessRequest.id)
    if due is None:
        return and_(due_col.is_(None), id_col > request_id)
    return or_(due_col > due, and_(due_col == due, id_col > request_id), due_col.is_(None))


def item(row: AccessRequest, today: date) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "stage": row.stage,
        "due": row.due.isoformat() if row.due else None,
        "overdue": bool(row.due and row.due < today and row.state in domain.OPEN),
        "organisation_id": row.organisation_id,
        "profile": row.profile,
        "department": row.department,
        "applicant": row.applicant,
        "valid_until": row.valid_until.isoformat(),
        "submitted_at": row.submitted_at.isoformat(),
    }


async def queue(
    session: AsyncSession,
    actor: Actor,
    *,
    today: date,
    department: str | None,
    state: str | None,
    after_key: QueueKey | None,
    limit: int,
) -> Page:
    """One page of the requests `actor` may see, oldest due date first, after `after_key` if given."""
    where = visibility(actor, department)
    if state:
        where.append(col(AccessRequest.state) == state)
    if after_key:
        where.append(after(after_key))
    rows = (
        (
            await session.execute(
                select(AccessRequest)
                .where(*where)
                .order_by(col(AccessRequest.due).asc().nulls_last(), col(AccessRequest.id))
                .limit(limit + 1)
            )
        )
        .scalars()
        .all()
    )
    page = list(rows[:limit])
    last = (page[-1].due, page[-1].id) if len(rows) > limit else None
    return Page([item(r, today) for r in page], last)


async def detail(session: AsyncSession, actor: Actor, request_id: str, today: date) -> dict[str, Any]:
    """The request with its documents (without their bytes) and its whole history, oldest first."""
    row = await get_request(session, request_id)
    domain.check_reader(store.facts_of(row), actor)
    history = (
        await session.execute(
            select(HistoryEntry).where(col(HistoryEntry.request_id) == row.id).order_by(col(HistoryEntry.id))
        )
    ).scalars()
    documents = await session.execute(
        select(
            col(Document.id),
            col(Document.filename),
            col(Document.size),
            col(Document.sha256),
            col(Document.uploaded_at),
        )
        .where(col(Document.request_id) == row.id)
        .order_by(col(Document.uploaded_at), col(Document.id))
    )
    return item(row, today) | {
        "version": row.version,
        "justification": row.justification,
        "renews_grant_id": row.renews_grant_id,
        "grant_id": row.grant_id,
        "requested_documents": row.requested_documents,
        "documents": [
            {
                "id": d.id,
                "filename": d.filename,
                "size": d.size,
                "sha256": d.sha256,
                "uploaded_at": d.uploaded_at.isoformat(),
            }
            for d in documents
        ],
        "history": [
            {
                "at": h.at.isoformat(),
                "actor": h.actor,
                "action": h.action,
                "stage": h.stage,
                "comment": h.comment,
                "documents": h.documents,
            }
            for h in history
        ],
    }


async def document(session: AsyncSession, actor: Actor, request_id: str, document_id: str) -> Document:
    row = await get_request(session, request_id)
    domain.check_reader(store.facts_of(row), actor)
    found = await session.get(Document, document_id)
    if found is None or found.request_id != row.id:
        raise Unknown("unknown_document", "This request has no such document.")
    return found
