"""What becomes of an alert: mailed to its department's auditors, acknowledged, closed.

Service functions, each in the caller's one transaction. The notifier and the digest run apart from
the ingestion (a background task reads the alerts it committed); an auditor's acknowledgement or
closing is staged as an event on `audit.alerts`, which comes back to the ingestion and so becomes an
entry of the log like any other change.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import directory
from cdap_audit.alerts import SOURCE
from cdap_audit.domain import ReviewAction, UnknownAlert, digest_cutoff, next_state
from cdap_audit.models import AlertRecord, AlertReview
from cdap_audit.notifications import AlertNotice, critical_mail, digest_mail
from cdap_shared import events as ev
from cdap_shared import mail, outbox

log = structlog.get_logger(__name__)

ALERT = AlertRecord.__table__  # type: ignore[attr-defined]
REVIEW = AlertReview.__table__  # type: ignore[attr-defined]
DIGEST_LOCK = 0x0A1E_D16E  # the advisory lock of the digest (any constant no other lock uses)
NOTIFY_BATCH = 100
EVENT_OF = {"acknowledge": "audit.alert.acknowledged", "close": "audit.alert.closed"}


async def review(
    session: AsyncSession,
    alert_id: str,
    action: ReviewAction,
    *,
    by: str,
    comment: str | None,
    topic: str,
    now: datetime,
) -> None:
    """Acknowledge or close an alert (raises `UnknownAlert`, `domain.CommentRequired` or
    `domain.InvalidTransition`), and stage the event that logs who did it."""
    if (await session.execute(select(ALERT.c.id).where(ALERT.c.alert_id == alert_id))).first() is None:
        raise UnknownAlert(alert_id)
    # The row may not exist yet (the notifier has not seen the alert): create it, then lock it, so
    # two auditors acting at once are serialised and the second one meets the first one's state.
    await session.execute(pg_insert(REVIEW).values(alert_id=alert_id, state="open").on_conflict_do_nothing())
    row = await session.get(AlertReview, alert_id, with_for_update=True, populate_existing=True)
    assert row is not None
    row.state = next_state(row.state, action, comment)
    if action == "acknowledge":
        row.acknowledged_by, row.acknowledged_at, row.acknowledgement = by, now, comment
    else:
        row.closed_by, row.closed_at, row.closing_comment = by, now, comment
    # The comment is free text written by a person: it stays here, the log keeps who and which alert.
    data = ev.AlertReviewed(alert_id=alert_id, by=by)
    event = ev.make_event(EVENT_OF[action], source=SOURCE, subject=alert_id, data=data)
    await outbox.add(session, event, topic=topic)


async def _notices(session: AsyncSession, rows: list[Any]) -> list[tuple[AlertNotice, str | None]]:
    """Each alert as mails tell it, with its department."""
    items = await directory.with_names(
        session, [{"actor": r.actor, "organisation_id": r.organisation_id} for r in rows]
    )
    found = []
    for row, named in zip(rows, items, strict=True):
        notice = AlertNotice(
            alert_id=row.alert_id,
            rule=row.rule,
            severity=row.severity,
            detail=row.detail,
            event_time=row.event_time,
            actor=row.actor,
            actor_name=named["actor_name"],
            organisation_name=named["organisation_name"],
        )
        found.append((notice, await directory.department_of(session, row.actor, row.organisation_id)))
    return found


async def notify_new(session: AsyncSession, *, portal_url: str, now: datetime) -> int:
    """Take the alerts not seen yet: each critical one is mailed at once to its department's auditors,
    the others wait (warnings for the digest). Returns how many mails were queued."""
    unseen = (
        select(ALERT)
        .where(~select(REVIEW.c.alert_id).where(REVIEW.c.alert_id == ALERT.c.alert_id).exists())
        .order_by(ALERT.c.id)
        .limit(NOTIFY_BATCH)
    )
    rows = list((await session.execute(unseen)).all())
    if not rows:
        return 0
    reviews = [
        {"alert_id": r.alert_id, "state": "open", "mailed_at": now if r.severity == "critical" else None}
        for r in rows
    ]
    # Only the replica whose insert wins an alert mails it.
    stmt = pg_insert(REVIEW).values(reviews).on_conflict_do_nothing().returning(REVIEW.c.alert_id)
    won = set((await session.execute(stmt)).scalars())
    critical = [r for r in rows if r.alert_id in won and r.severity == "critical"]
    queued = 0
    for notice, department in await _notices(session, critical):
        auditors = await directory.auditor_emails(session, department)
        if not auditors:
            log.error("critical alert mailed to nobody: no auditor known", alert=notice.alert_id)
        for to in auditors:
            mail.queue(session, critical_mail(to, notice, portal_url))
            queued += 1
    return queued


async def send_digest(session: AsyncSession, *, hour: int, portal_url: str, now: datetime) -> int:
    """One mail per auditor listing the open warnings of their department raised before the last
    `hour` o'clock (Paris) and not mailed yet; from that hour on, once a day in effect (those mailed
    are marked). Returns how many mails were queued."""
    # One replica at a time, so an auditor never gets two halves of one digest.
    if not (
        await session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": DIGEST_LOCK})
    ).scalar():
        return 0
    cutoff = digest_cutoff(now, hour)
    waiting = (
        select(ALERT)
        .join(REVIEW, REVIEW.c.alert_id == ALERT.c.alert_id)
        .where(
            ALERT.c.severity == "warning",
            ALERT.c.raised_at < cutoff,
            REVIEW.c.state == "open",
            REVIEW.c.mailed_at.is_(None),
        )
        .order_by(ALERT.c.id)
    )
    rows = list((await session.execute(waiting)).all())
    if not rows:
        return 0
    by_auditor: dict[str, list[AlertNotice]] = defaultdict(list)
    for notice, department in await _notices(session, rows):
        for to in await directory.auditor_emails(session, department):
            by_auditor[to].append(notice)
    for to, notices in sorted(by_auditor.items()):
        mail.queue(session, digest_mail(to, notices, cutoff.date(), portal_url))
    ids = [r.alert_id for r in rows]
    await session.execute(REVIEW.update().where(REVIEW.c.alert_id.in_(ids)).values(mailed_at=now))
    return len(by_auditor)
