"""Events the tests publish as another service would (the events' models are the contract)."""

from __future__ import annotations

from datetime import date, timedelta

from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_shared.relay import make_producer


async def publish(kafka: str, topic: str, *events: CloudEvent) -> None:
    """Publish `events` on `topic` as a service does (keyed by subject), with a producer of their own."""
    producer = make_producer(kafka)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, event.to_bytes(), key=event.subject.encode())
    finally:
        await producer.stop()


def request_approved(
    organisation_id: str,
    email: str,
    profile: str = "T2",
    *,
    request_id: str | None = None,
    source: str = "/test",
    applicant: dict[str, str] | None = None,
) -> CloudEvent:
    """What access-requests publishes once a manager approved a request (identity then provisions the
    applicant `email`, Jules Petit unless `applicant` says otherwise, with a grant of 200 days)."""
    request_id = request_id or f"req-{new_event_id()}"
    person = {"family_name": "Petit", "given_name": "Jules", "job_title": "Gestionnaire", **(applicant or {})}
    return ev.make_event(
        "access.request.approved",
        source=source,
        subject=request_id,
        data=ev.RequestApproved(
            request_id=request_id,
            organisation_id=organisation_id,
            profile=profile,
            department="76",
            valid_until=date.today() + timedelta(days=200),
            by="manager-1",
            applicant=ev.Applicant(email=email, **person),
        ),
    )
