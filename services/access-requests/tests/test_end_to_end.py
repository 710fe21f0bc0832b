"""The whole path over real Kafka, as identity would drive it: organisation registered, request submitted,
documents asked and sent, two approvals, `access.request.approved` on the topic, grant issued, provisioned;
and the notification mails in the SMTP sink."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from cdap_access.models import PartnerOrganisation
from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent
from cdap_shared.kafka_access import KafkaLogin
from cdap_testing import MAIL_DIR, eventually, mails_to

from .conftest import ORG, PARTNER, Service

pytestmark = pytest.mark.stack


async def _events_on(
    topic: str, bootstrap: str, subject: str, until: str, within: float = 20.0
) -> list[CloudEvent]:
    """The events of one subject on a topic, from the start, until one of type `until` arrives."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[CloudEvent] = []
    try:
        async with asyncio.timeout(within):
            async for record in consumer:
                event = CloudEvent.from_bytes(record.value)
                if event.subject == subject:
                    assert record.key == subject.encode()
                    found.append(event)
                    if event.type == until:
                        return found
    finally:
        await consumer.stop()
    raise AssertionError(f"no {until} for {subject}")


async def test_submit_to_provisioned_through_kafka_with_mails(svc_without_organisation: Service) -> None:
    svc = svc_without_organisation
    await svc.publish(
        "identity.organisation.registered",
        ORG,
        ev.OrganisationRegistered(
            organisation_id=ORG,
            siret="21760540100033",
            name="CCAS de Rouen",
            kind="social_services",
            department="76",
            convention_reference="CONV-76-2026-001",
            convention_valid_until=date.today() + timedelta(days=700),
            administrators=[PARTNER],
        ),
    )

    async def organisation_known() -> bool:
        async with svc.app.state.sessions() as session:
            return await session.get(PartnerOrganisation, ORG) is not None

    await eventually(organisation_known)

    request_id = await svc.submit(profile="T1")
    r = await svc.decide(request_id, svc.instructor(), "request_documents", documents=["convention signée"])
    assert r.json()["state"] == "documents_requested"
    assert (await svc.upload(request_id)).json()["state"] == "submitted"
    assert (await svc.decide(request_id, svc.instructor())).json()["state"] == "awaiting_second_approval"
    assert (await svc.decide(request_id, svc.manager())).json()["state"] == "approved"

    published = await _events_on(
        svc.settings.access_topic, svc.settings.kafka_bootstrap, request_id, "access.request.approved"
    )
    assert [e.type.rsplit(".", 1)[1] for e in published] == [
        "submitted",
        "documents_requested",
        "documents_received",
        "stage_approved",
        "approved",
    ]
    approved = ev.parse_data(published[-1])
    assert isinstance(approved, ev.RequestApproved)
    assert (approved.profile, approved.department, approved.by) == ("T1", "76", "manager-1")

    # identity provisions the account and issues the grant, naming the request.
    await svc.publish(
        "identity.grant.issued",
        "user-claire",
        ev.GrantIssued(
            grant_id="grant-claire-t1",
            user_id="user-claire",
            organisation_id=ORG,
            organisation_siret="21760540100033",
            profile=approved.profile,
            department=approved.department,
            valid_from=date.today(),
            valid_until=approved.valid_until,
            request_id=request_id,
        ),
    )

    async def provisioned() -> bool:
        detail = await svc.get(request_id)
        return bool(detail["state"] == "provisioned" and detail["grant_id"] == "grant-claire-t1")

    await eventually(provisioned)

    async def all_mails() -> dict[str, list[str]] | None:
        boxes = {
            "instructors": mails_to(MAIL_DIR, svc.mailbox("instructors")),
            "managers": mails_to(MAIL_DIR, svc.mailbox("managers")),
            "partner": mails_to(MAIL_DIR, svc.partner_email()),
        }
        counts = {k: len(v) for k, v in boxes.items()}
        return boxes if counts == {"instructors": 2, "managers": 1, "partner": 4} else None

    boxes = await eventually(all_mails)
    assert "Nouvelle demande" in boxes["instructors"][0] and "Pièces reçues" in boxes["instructors"][1]
    assert "premier niveau" in boxes["managers"][0]
    assert [m.split("\n", 1)[0] for m in boxes["partner"]] == [
        f"Subject: [CDAP] {subject} ({request_id[-8:]})"
        for subject in (
            "Pièces demandées pour votre demande d'habilitation",
            "Demande d'habilitation validée en premier niveau",
            "Demande d'habilitation accordée",
            "Habilitation créée",
        )
    ]
    assert all(request_id in m for box in boxes.values() for m in box)
