"""Writing what happens to a request: the row, its history entry, its event and its mails, together.

Nothing here commits: callers (a route, the consumer, the scheduler) own the transaction, so a state
change, its outbox event and its queued mails are all kept or all dropped. A change of state is an
`UPDATE ... WHERE id = :id AND version = :version`: of two concurrent writers exactly one succeeds,
the other gets `StaleRequest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_access import notifications
from cdap_access.calendar import add_business_days, local_date
from cdap_access.config import Settings
from cdap_access.domain import Facts, State, Step, stage_of
from cdap_access.models import AccessRequest, HistoryEntry
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.envelope import CloudEvent

SOURCE = "/cdap/access-requests"
SYSTEM_ACTOR = "cdap-access-requests"  # the `by` of what the service does on its own (renewals)


class StaleRequest(Exception):
    """The request changed between reading and writing it (another decision won)."""


async def load(session: AsyncSession, request_id: str) -> AccessRequest | None:
    """The request as it is now, detached: changing the object never writes to the database."""
    row = await session.get(AccessRequest, request_id, populate_existing=True)
    if row is not None:
        session.expunge(row)
    return row


def facts_of(row: AccessRequest) -> Facts:
    return Facts(
        state=State(row.state),
        department=row.department,
        organisation_id=row.organisation_id,
        submitted_by=row.submitted_by,
        sensitive=row.sensitive,
        approvals=tuple(row.approvals),
        applicant_email=row.applicant_email,
        applicant_user_id=row.user_id,
    )


def due_for(state: State, department: str, today: date, settings: Settings) -> date | None:
    """When the party holding the request must act: a stage's business days, or the documents' delay."""
    if state in (State.SUBMITTED, State.AWAITING_SECOND_APPROVAL):
        return add_business_days(today, settings.stage_business_days, department)
    if state is State.DOCUMENTS_REQUESTED:
        return date.fromordinal(today.toordinal() + settings.documents_expiry_days)
    return None


def event_for(
    row: AccessRequest,
    action: str,
    stage: int | None,
    actor: str | None,
    comment: str | None,
    documents: list[str],
) -> CloudEvent:
    """The event reporting `action` on `row` (keyed, like all of a request's events, by its id)."""
    data: ev.EventData
    if action in ("submitted", "approved"):
        kind = ev.RequestSubmitted if action == "submitted" else ev.RequestApproved
        data = kind.of(row, request_id=row.id, by=actor or SYSTEM_ACTOR)
    else:
        data = ev.RequestDecision(
            request_id=row.id, by=actor, stage=stage, comment=comment, documents=documents
        )
    return ev.make_event(f"access.request.{action}", source=SOURCE, subject=row.id, data=data)


async def _history(
    session: AsyncSession,
    settings: Settings,
    row: AccessRequest,
    *,
    action: str,
    stage: int | None,
    actor: str | None,
    now: datetime,
    comment: str | None,
    documents: list[str],
    event_type: str | None,
) -> HistoryEntry:
    event = None
    if event_type is not None:
        event = event_for(row, action, stage, actor, comment, documents)
        await outbox.add(session, event, topic=settings.access_topic)
    entry = HistoryEntry(
        request_id=row.id,
        at=now,
        actor=actor,
        action=action,
        stage=stage,
        comment=comment,
        documents=documents,
        event_id=event.id if event else None,
    )
    session.add(entry)
    return entry


def new_request(settings: Settings, *, now: datetime, **fields: Any) -> AccessRequest:
    """A request entering the stage-1 queue at `now` (not yet added to a session)."""
    applicant: dict[str, str] = fields["applicant"]
    return AccessRequest(
        **fields,
        applicant_email=applicant["email"].lower(),
        state=State.SUBMITTED.value,
        stage=1,
        due=due_for(State.SUBMITTED, fields["department"], local_date(now, settings.timezone), settings),
        submitted_at=now,
        state_since=now,
    )


async def insert_request(
    session: AsyncSession, settings: Settings, row: AccessRequest, *, actor: str, now: datetime
) -> None:
    """Add a `new_request` with its `access.request.submitted` event and mails."""
    session.add(row)
    await session.flush()
    session.expunge(row)
    await _history(
        session,
        settings,
        row,
        action="submitted",
        stage=1,
        actor=actor,
        now=now,
        comment=None,
        documents=[],
        event_type="access.request.submitted",
    )
    await notifications.notify(
        session, settings, row, "renewal_submitted" if row.kind == "renewal" else "submitted"
    )


async def record_step(
    session: AsyncSession,
    settings: Settings,
    row: AccessRequest,
    step: Step,
    *,
    actor: str | None,
    now: datetime,
    comment: str | None = None,
    documents: Sequence[str] = (),
) -> None:
    """Apply `step` to `row` (version-checked), record it, stage its event and queue its mails.

    Entering a state starts a new stage visit: a new due date, and reminders may be sent again.
    """
    state = step.after.state
    values: dict[str, Any] = {
        "state": state.value,
        "stage": stage_of(state),
        "approvals": list(step.after.approvals),
        "version": row.version + 1,
    }
    if state.value != row.state:
        values |= {
            "state_since": now,
            "due": due_for(state, row.department, local_date(now, settings.timezone), settings),
            "reminded": False,
            "escalated": False,
        }
    if step.action == "documents_requested":
        values["requested_documents"] = list(documents)
    result = cast(
        CursorResult[Any],
        await session.execute(
            update(AccessRequest)
            .where(col(AccessRequest.id) == row.id, col(AccessRequest.version) == row.version)
            .values(**values)
        ),
    )
    if result.rowcount != 1:
        raise StaleRequest(row.id)
    for name, value in values.items():
        setattr(row, name, value)
    await _history(
        session,
        settings,
        row,
        action=step.action,
        stage=step.stage,
        actor=actor,
        now=now,
        comment=comment,
        documents=list(documents),
        event_type=step.event_type,
    )
    await notifications.notify(
        session, settings, row, step.action, comment=comment, documents=list(documents)
    )


async def record_note(
    session: AsyncSession,
    settings: Settings,
    row: AccessRequest,
    *,
    action: str,
    actor: str | None,
    now: datetime,
    comment: str | None = None,
    event_type: str | None = None,
    recipients: Sequence[str] | None = None,
) -> HistoryEntry:
    """Something that does not change the state (a comment, a reminder): history, event, mails."""
    entry = await _history(
        session,
        settings,
        row,
        action=action,
        stage=row.stage,
        actor=actor,
        now=now,
        comment=comment,
        documents=[],
        event_type=event_type,
    )
    await notifications.notify(session, settings, row, action, recipients=recipients, comment=comment)
    return entry
