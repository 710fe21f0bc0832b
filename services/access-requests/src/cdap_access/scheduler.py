"""Time-driven work: reminders and escalations of late stages, expiry of requests whose documents never
came, and renewal requests for grants about to end.

`run_due_jobs(sessions, ctx, now)` does one pass and is what tests call with the `now` they want;
`periodic(sessions, ctx)` runs it every `scheduler_interval_seconds` in the app's lifespan. Each request
is handled in its own transaction and every write is guarded (version, flag, or "no renewal yet"), so
two replicas running a pass at once still remind, escalate, expire and renew each request once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from cdap_access import domain, store
from cdap_access.calendar import add_years, local_date
from cdap_access.config import Context
from cdap_access.domain import State
from cdap_access.models import AccessRequest, IssuedGrant, PartnerOrganisation
from cdap_access.notifications import MANAGERS, stage_queue
from cdap_shared.envelope import new_event_id, utcnow
from cdap_shared.periodic import Periodic

log = structlog.get_logger(__name__)
IN_A_STAGE = (State.SUBMITTED.value, State.AWAITING_SECOND_APPROVAL.value)


@dataclass
class Report:
    """The ids each job touched in one pass."""

    reminded: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    renewals: list[str] = field(default_factory=list)


async def _ids(sessions: async_sessionmaker[AsyncSession], query: Any) -> list[str]:
    async with sessions() as session:
        return [str(i) for i in (await session.execute(query)).scalars()]


async def deadlines(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, now: datetime, report: Report
) -> None:
    """On the due date, remind the stage's queue; once past it, escalate to the department's managers."""
    today = local_date(now, ctx.settings.timezone)
    query = select(col(AccessRequest.id)).where(
        col(AccessRequest.state).in_(IN_A_STAGE),
        col(AccessRequest.due) <= today,
        ~col(AccessRequest.escalated),
    )
    for request_id in await _ids(sessions, query):
        async with sessions() as session, session.begin():
            row = await store.load(session, request_id)
            if row is None or row.state not in IN_A_STAGE or row.due is None:
                continue
            if row.due < today and not row.escalated:
                action, flags, recipients = "escalated", {"escalated": True, "reminded": True}, (MANAGERS,)
            elif not row.reminded:
                action, flags, recipients = "reminded", {"reminded": True}, (stage_queue(row.stage),)
            else:
                continue
            guarded = update(AccessRequest).where(
                col(AccessRequest.id) == row.id,
                col(AccessRequest.version) == row.version,
                col(AccessRequest.escalated) == row.escalated,
                col(AccessRequest.reminded) == row.reminded,
            )
            result = cast(CursorResult[Any], await session.execute(guarded.values(**flags)))
            if result.rowcount != 1:
                continue  # decided or flagged meanwhile: the next pass looks again
            comment = f"Étape {row.stage} à traiter avant le {row.due.isoformat()}"
            await store.record_note(
                session,
                ctx.settings,
                row,
                action=action,
                actor=None,
                now=now,
                comment=comment,
                event_type=f"access.request.{action}",
                recipients=recipients,
            )
            getattr(report, action).append(row.id)


async def expiries(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, now: datetime, report: Report
) -> None:
    """Requests waiting for documents longer than the delay expire."""
    cutoff = now - timedelta(days=ctx.settings.documents_expiry_days)
    query = select(col(AccessRequest.id)).where(
        col(AccessRequest.state) == State.DOCUMENTS_REQUESTED.value, col(AccessRequest.state_since) <= cutoff
    )
    for request_id in await _ids(sessions, query):
        async with sessions() as session, session.begin():
            row = await store.load(session, request_id)
            if row is None or row.state_since > cutoff:
                continue
            try:
                step = domain.expire(store.facts_of(row))
                comment = f"Pièces non reçues en {ctx.settings.documents_expiry_days} jours"
                await store.record_step(
                    session, ctx.settings, row, step, actor=None, now=now, comment=comment
                )
            except (domain.Refused, store.StaleRequest):
                continue  # documents arrived (or it was withdrawn) meanwhile
            report.expired.append(row.id)


def _renewal_end(today: date, organisation: PartnerOrganisation) -> date | None:
    """A renewal asks for a year from today, within the convention; None if the convention ends first."""
    end = min(add_years(today, 1), organisation.convention_valid_until)
    return end if end > today else None


async def renewals(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, now: datetime, report: Report
) -> None:
    """A grant ending within the window gets one renewal request, through the same stages as a new one."""
    today = local_date(now, ctx.settings.timezone)
    query = select(col(IssuedGrant.grant_id)).where(
        col(IssuedGrant.status) == "active",
        col(IssuedGrant.valid_until) >= today,
        col(IssuedGrant.valid_until) <= today + timedelta(days=ctx.settings.renewal_window_days),
        col(IssuedGrant.renewal_request_id).is_(None),
        col(IssuedGrant.removal_request_id).is_(None),
    )
    for grant_id in await _ids(sessions, query):
        async with sessions() as session, session.begin():
            grant = await session.get(IssuedGrant, grant_id, with_for_update=True)
            if grant is None or grant.renewal_request_id or grant.removal_request_id:
                continue
            original = await store.load(session, grant.request_id) if grant.request_id else None
            organisation = await session.get(PartnerOrganisation, grant.organisation_id)
            end = _renewal_end(today, organisation) if organisation else None
            usable = organisation is not None and not organisation.delegation_withdrawn
            if original is None or end is None or not usable or grant.profile not in ctx.catalogue.profiles:
                # No applicant to copy, no valid convention, or a profile since removed: the partner
                # administrator has to submit a new request.
                log.info("grant not renewable automatically", grant_id=grant.grant_id)
                continue
            row = store.new_request(
                ctx.settings,
                now=now,
                id=new_event_id(),
                kind="renewal",
                renews_grant_id=grant.grant_id,
                user_id=grant.user_id,  # the holder: never the one who decides its renewal
                organisation_id=grant.organisation_id,
                applicant=original.applicant,
                profile=grant.profile,
                department=grant.department,
                justification=f"Renouvellement de l'habilitation {grant.grant_id} "
                f"(fin le {grant.valid_until.isoformat()})",
                valid_until=end,
                sensitive=ctx.catalogue.is_sensitive(grant.profile),
                submitted_by=store.SYSTEM_ACTOR,
                contact_email=original.contact_email,
            )
            await store.insert_request(session, ctx.settings, row, actor=store.SYSTEM_ACTOR, now=now)
            grant.renewal_request_id = row.id
            report.renewals.append(row.id)


async def run_due_jobs(sessions: async_sessionmaker[AsyncSession], ctx: Context, now: datetime) -> Report:
    """One pass of every time-driven job, as if the clock read `now`."""
    report = Report()
    await deadlines(sessions, ctx, now, report)
    await expiries(sessions, ctx, now, report)
    await renewals(sessions, ctx, now, report)
    return report


def periodic(sessions: async_sessionmaker[AsyncSession], ctx: Context) -> Periodic:
    """`run_due_jobs` at the real time, every `scheduler_interval_seconds`; a failed pass (a database
    outage) is retried at the next one, which catches up."""

    async def pass_now() -> None:
        report = await run_due_jobs(sessions, ctx, utcnow())
        log.info("scheduled jobs ran", **{k: len(v) for k, v in vars(report).items()})

    return Periodic("scheduler", pass_now, ctx.settings.scheduler_interval_seconds)
