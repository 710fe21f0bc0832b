"""Reading requests: the approvers' queue (keyset-paginated), one request with its history, a document.

Approvers see their own department's requests only, partner administrators their organisation's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_access import domain, store
from cdap_access.calendar import business_days_between
from cdap_access.domain import NotPermitted, Unknown
from cdap_access.models import AccessRequest, Document, HistoryEntry, PartnerOrganisation
from cdap_access.requests import get_request
from cdap_shared.actor import Actor

QueueKey = tuple[date | None, str]  # (due, id): where a page of the queue ends


@dataclass(frozen=True)
class Page:
    """Queue items, the key of the last one when more follow, and how many the filters keep over
    every page."""

    items: list[dict[str, Any]]
    last: QueueKey | None
    total: int


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


def awaiting(actor: Actor) -> list[ColumnElement[bool]]:
    """The filter that keeps the requests waiting for `actor`'s decision: at a stage their role decides,
    and not already approved by them (four eyes: the next decision is someone else's)."""
    states = domain.awaiting_decision_states(actor.roles)
    return [
        col(AccessRequest.state).in_([s.value for s in states]),
        not_(col(AccessRequest.approvals).contains([actor.sub])),
    ]


def matching(words: str) -> ColumnElement[bool]:
    """Requests whose organisation's name, or applicant's family or given name, contains `words` (any
    case), or whose organisation's SIRET starts with them."""
    text = words.strip()
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    applicant = col(AccessRequest.applicant)
    names = [
        func.lower(col(PartnerOrganisation.name)),
        func.lower(applicant["family_name"].astext),
        func.lower(applicant["given_name"].astext),
    ]
    found: list[ColumnElement[bool]] = [name.like(pattern, escape="\\") for name in names]
    if text.isdigit():
        found.append(col(PartnerOrganisation.siret).startswith(text))
    return or_(*found)


def item(row: AccessRequest, today: date, organisation: PartnerOrganisation | None = None) -> dict[str, Any]:
    """A request as lists show it, with its organisation's name and SIRET as identity last published them
    (None before the first), and, while open, the business days left before its due date."""
    is_open = row.state in domain.OPEN
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "stage": row.stage,
        "due": row.due.isoformat() if row.due else None,
        "overdue": bool(row.due and row.due < today and is_open),
        "business_days_left": (
            business_days_between(today, row.due, row.department) if row.due and is_open else None
        ),
        "organisation_id": row.organisation_id,
        "organisation_name": organisation.name if organisation else None,
        "organisation_siret": organisation.siret if organisation else None,
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
    awaiting_me: bool = False,
    search: str | None = None,
    after_key: QueueKey | None,
    limit: int,
) -> Page:
    """One page of the requests `actor` may see, oldest due date first, after `after_key` if given."""
    where = visibility(actor, department)
    if state:
        where.append(col(AccessRequest.state) == state)
    if awaiting_me:
        where += awaiting(actor)
    if search and search.strip():
        where.append(matching(search))
    joined = select(AccessRequest, PartnerOrganisation).outerjoin(
        PartnerOrganisation, col(PartnerOrganisation.organisation_id) == col(AccessRequest.organisation_id)
    )
    total = await session.scalar(select(func.count()).select_from(joined.where(*where).subquery()))
    if after_key:
        where.append(after(after_key))
    rows = (
        await session.execute(
            joined.where(*where)
            .order_by(col(AccessRequest.due).asc().nulls_last(), col(AccessRequest.id))
            .limit(limit + 1)
        )
    ).all()
    page = list(rows[:limit])
    last = (page[-1][0].due, page[-1][0].id) if len(rows) > limit else None
    return Page([item(row, today, organisation) for row, organisation in page], last, total or 0)


async def detail(session: AsyncSession, actor: Actor, request_id: str, today: date) -> dict[str, Any]:
    """The request with its documents (without their bytes) and its whole history, oldest first."""
    row = await get_request(session, request_id)
    domain.check_reader(store.facts_of(row), actor)
    organisation = await session.get(PartnerOrganisation, row.organisation_id)
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
    return item(row, today, organisation) | {
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
