"""Reading requests: the approvers' queue (keyset-paginated), one request with its history, a document.

Approvers see their own department's requests only, partner administrators their organisation's.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_access import domain, store
from cdap_access.domain import Actor, Refused
from cdap_access.models import AccessRequest, Document, HistoryEntry
from cdap_access.requests import get_request
from cdap_shared.problems import Problem


def encode_cursor(due: date | None, request_id: str) -> str:
    raw = json.dumps([due.isoformat() if due else None, request_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date | None, str]:
    try:
        due, request_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return (date.fromisoformat(due) if due is not None else None), str(request_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Problem(
            400, "Invalid cursor", "Use the next_cursor of a previous page.", reason="bad_cursor"
        ) from exc


def visibility(actor: Actor, department: str | None) -> list[ColumnElement[bool]]:
    """The filter that keeps `actor` inside its department (CAF staff) or organisation (partner)."""
    if domain.PARTNER_ADMIN in actor.roles and actor.org is not None:
        scope = [col(AccessRequest.organisation_id) == actor.org]
        return scope + ([col(AccessRequest.department) == department] if department else [])
    if not actor.roles & domain.STAFF_READER_ROLES:
        raise Refused(403, "role_not_allowed", "Your role does not allow reading access requests.")
    if actor.department is None or (department is not None and department != actor.department):
        raise Refused(403, "other_department", "You may read your own department's requests only.")
    return [col(AccessRequest.department) == actor.department]


def after(cursor: str) -> ColumnElement[bool]:
    """Rows after the cursor in (due ascending, NULLs last; id) order."""
    due, request_id = decode_cursor(cursor)
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
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """One page of the requests `actor` may see, oldest due date first, then `next_cursor` or None."""
    where = visibility(actor, department)
    if state:
        where.append(col(AccessRequest.state) == state)
    if cursor:
        where.append(after(cursor))
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
    next_cursor = encode_cursor(page[-1].due, page[-1].id) if len(rows) > limit else None
    return {"items": [item(r, today) for r in page], "next_cursor": next_cursor}


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
        raise Problem(404, "Not found", "This request has no such document.", reason="unknown_document")
    return found
