"""Time-driven jobs with an injected clock: reminders, escalations, expiry, renewals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from cdap_access.scheduler import Report, run_due_jobs
from cdap_shared import events as ev
from cdap_shared.envelope import utcnow
from cdap_shared.http import current_time
from cdap_testing import eventually

from .conftest import ORG, Service, assert_problem, mail_with

pytestmark = pytest.mark.stack
PARIS = ZoneInfo("Europe/Paris")


def morning(day: date) -> datetime:
    return datetime.combine(day, time(9), tzinfo=PARIS)


async def run(svc: Service, now: datetime) -> Report:
    return await run_due_jobs(svc.app.state.sessions, svc.app.state.ctx, now)


async def test_a_stage_is_reminded_on_its_due_date_then_escalated_once_late(svc: Service) -> None:
    request_id = await svc.submit(profile="T1")
    due = date.fromisoformat((await svc.get(request_id))["due"])

    assert await run(svc, morning(due - timedelta(days=1))) == Report()
    assert (await run(svc, morning(due))).reminded == [request_id]
    assert await run(svc, morning(due)) == Report()  # once
    await mail_with(svc.mailbox("instructors"), "Rappel", request_id)

    late = await run(svc, morning(due + timedelta(days=1)))
    assert late.escalated == [request_id] and late.reminded == []
    assert await run(svc, morning(due + timedelta(days=5))) == Report()  # once per stage
    escalated = [e for e in await svc.outbox() if e.type == "access.request.escalated"]
    assert len(escalated) == 1 and escalated[0].data["stage"] == 1
    await mail_with(svc.mailbox("managers"), "en retard", request_id)
    actions = [h["action"] for h in (await svc.get(request_id))["history"]]
    assert actions == ["submitted", "reminded", "escalated"]

    # Stage 2 is a new stage with its own deadline: it may be escalated again.
    assert (await svc.decide(request_id, svc.instructor())).json()["state"] == "awaiting_second_approval"
    stage_two_due = date.fromisoformat((await svc.get(request_id))["due"])
    report = await run(svc, morning(stage_two_due + timedelta(days=1)))
    assert report.escalated == [request_id]
    assert [e.data["stage"] for e in await svc.outbox() if e.type == "access.request.escalated"] == [1, 2]


async def test_a_request_without_documents_for_thirty_days_expires(svc: Service) -> None:
    request_id = await svc.submit()
    await svc.decide(request_id, svc.instructor(), "request_documents", documents=["convention"])
    now = utcnow()
    assert (await run(svc, now + timedelta(days=29))).expired == []
    assert (await run(svc, now + timedelta(days=30, minutes=1))).expired == [request_id]
    assert (await svc.get(request_id))["state"] == "expired"
    expired = (await svc.outbox())[-1]
    assert expired.type == "access.request.expired" and expired.subject == request_id
    await mail_with(svc.partner_email(), "expirée", request_id)
    before = await svc.snapshot(request_id)
    assert_problem(await svc.upload(request_id), 409, "request_closed")
    assert await svc.snapshot(request_id) == before


async def _provisioned(svc: Service, *, grant_id: str, ends_in_days: int, email: str) -> str:
    applicant = {**svc.submission()["applicant"], "email": email}
    request_id = await svc.submit(profile="T2", applicant=applicant)
    assert (await svc.decide(request_id, svc.instructor())).json()["state"] == "approved"
    await svc.apply(
        "identity.grant.issued",
        "user-" + grant_id,
        ev.GrantIssued(
            grant_id=grant_id,
            user_id="user-" + grant_id,
            organisation_id=ORG,
            organisation_siret="21760540100033",
            profile="T2",
            department="76",
            valid_from=date.today() - timedelta(days=300),
            valid_until=date.today() + timedelta(days=ends_in_days),
            request_id=request_id,
        ),
    )
    assert (await svc.get(request_id))["state"] == "provisioned"
    return request_id


async def test_a_grant_ending_within_thirty_days_gets_one_renewal_request(svc: Service) -> None:
    original = await _provisioned(svc, grant_id="g-soon", ends_in_days=20, email=f"soon-{svc.tag}@ccas.test")
    await _provisioned(svc, grant_id="g-later", ends_in_days=45, email=f"later-{svc.tag}@ccas.test")
    await _provisioned(svc, grant_id="g-removed", ends_in_days=10, email=f"gone-{svc.tag}@ccas.test")
    r = await svc.client.post("/v1/grants/g-removed/removal-requests", headers=svc.partner())
    assert r.status_code == 202

    report = await run(svc, utcnow())
    [renewal_id] = report.renewals
    assert (await run(svc, utcnow())).renewals == []  # once per grant

    renewal = await svc.get(renewal_id)
    source = await svc.get(original)
    assert (renewal["kind"], renewal["renews_grant_id"], renewal["state"]) == (
        "renewal",
        "g-soon",
        "submitted",
    )
    assert renewal["applicant"] == source["applicant"] and renewal["profile"] == "T2"
    assert date.fromisoformat(renewal["valid_until"]) <= date.today() + timedelta(days=366)
    submitted = [e for e in await svc.outbox() if e.subject == renewal_id]
    assert [e.type for e in submitted] == ["access.request.submitted"]
    assert submitted[0].data["by"] == "cdap-access-requests"
    await mail_with(svc.partner_email(), "renouvellement", renewal_id)

    # The renewal goes through the same stages as a new request, and its events say what it renews
    # (the audit log records a renewal as one, not as a new request).
    r = await svc.decide(renewal_id, svc.instructor())
    assert (r.status_code, r.json()["state"]) == (200, "approved")
    events = {e.type: e.data for e in await svc.outbox() if e.subject == renewal_id}
    for event_type in ("access.request.submitted", "access.request.approved"):
        assert (events[event_type]["kind"], events[event_type]["renews_grant_id"]) == ("renewal", "g-soon")


async def test_the_lifespan_runs_the_scheduler(service_factory: Callable[..., Awaitable[Service]]) -> None:
    svc = await service_factory(scheduler_interval_seconds=0.2)
    await svc.organisation()
    svc.app.dependency_overrides[current_time] = lambda: datetime.now(UTC) - timedelta(days=20)
    request_id = await svc.submit()
    del svc.app.dependency_overrides[current_time]

    async def escalated() -> bool:
        return any(h["action"] == "escalated" for h in (await svc.get(request_id))["history"])

    await eventually(escalated, within=10)
