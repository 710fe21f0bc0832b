"""Submitting a request: what is accepted, and every refusal leaving nothing behind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import pytest

from cdap_access.calendar import add_business_days
from cdap_shared import events as ev
from cdap_shared.clock import civil_today
from cdap_testing import MAIL_DIR, mails_to

from .conftest import OTHER_ORG, PARTNER, Service, assert_problem, mail_with

pytestmark = pytest.mark.stack


async def test_a_submission_enters_the_stage_one_queue_with_its_event_and_mail(svc: Service) -> None:
    r = await svc.client.post("/v1/access-requests", json=svc.submission(), headers=svc.partner())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "submitted" and body["stage"] == 1 and body["version"] == 1
    # The deadline counts from the day in Paris, which is tomorrow between 23:00 and midnight UTC.
    assert body["due"] == add_business_days(civil_today(), 5, "76").isoformat()

    detail = await svc.get(body["id"])
    assert (
        detail["kind"] == "new" and detail["profile"] == "T1" and detail["organisation_id"] == "org-76-ccas"
    )
    assert [(h["action"], h["actor"]) for h in detail["history"]] == [("submitted", PARTNER)]

    [event] = await svc.outbox()
    assert event.type == "access.request.submitted" and event.subject == body["id"]
    data = ev.parse_data(event)
    assert isinstance(data, ev.RequestSubmitted)
    assert (data.request_id, data.by, data.profile, data.department) == (body["id"], PARTNER, "T1", "76")

    instructors = svc.mailbox("instructors")
    await mail_with(instructors, "Nouvelle demande", body["id"], "Profil T1")
    assert len(mails_to(MAIL_DIR, instructors)) == 1


def _days(n: int) -> str:
    return (date.today() + timedelta(days=n)).isoformat()


@pytest.mark.parametrize(
    ("overrides", "status", "reason"),
    [
        ({"profile": "T9"}, 422, "unknown_profile"),
        ({"valid_until": _days(0)}, 422, "end_date_not_in_future"),
        ({"valid_until": _days(-3)}, 422, "end_date_not_in_future"),
        ({"valid_until": _days(400)}, 422, "end_date_too_far"),
        ({"department": "20"}, 422, "unknown_department"),
        ({"department": "99"}, 422, "unknown_department"),
        ({"department": "27"}, 422, "department_mismatch"),
        ({"organisation_id": "org-unknown"}, 403, "not_your_organisation"),
        ({"justification": "x" * 2001}, 422, None),
        ({"justification": ""}, 422, None),
        (
            {"applicant": {"family_name": "A", "given_name": "B", "email": "not-an-email", "job_title": "C"}},
            422,
            None,
        ),
        (
            {
                "applicant": {
                    "family_name": "A",
                    "given_name": "B",
                    "email": "a@b.fr\r\nBcc: x@y.fr",
                    "job_title": "C",
                }
            },
            422,
            None,
        ),
        (
            {"applicant": {"family_name": "A" * 101, "given_name": "B", "email": "a@b.fr", "job_title": "C"}},
            422,
            None,
        ),
        # Names go into mails: no line breaks, no control characters, nothing that reads as a link.
        *(
            (
                {"applicant": {"family_name": name, "given_name": "B", "email": "a@b.fr", "job_title": "C"}},
                422,
                None,
            )
            for name in (
                "Martin\nhttps://evil.example/activate?token=FAKE",
                "Martin www.evil.fr",
                "Martin\u202e",
                "voir evil.com",
            )
        ),
        (
            {"applicant": {"family_name": "A", "given_name": "B\r\nC", "email": "a@b.fr", "job_title": "C"}},
            422,
            None,
        ),
        ({"valid_until": "next year"}, 422, None),
        ({"unexpected": "field"}, 422, None),
    ],
)
async def test_invalid_submissions_are_refused_and_change_nothing(
    svc: Service, overrides: dict[str, Any], status: int, reason: str | None
) -> None:
    before = await svc.snapshot()
    r = await svc.client.post("/v1/access-requests", json=svc.submission(**overrides), headers=svc.partner())
    assert_problem(r, status, reason)
    assert await svc.snapshot() == before


@pytest.mark.parametrize(
    ("organisation", "headers", "status", "reason"),
    [
        ({}, "instructor", 403, "role_not_allowed"),
        ({}, "other_partner", 403, "not_your_organisation"),
        ({}, "not_listed", 403, "not_an_administrator"),
        ({"delegation_withdrawn": True}, "partner", 403, "delegation_withdrawn"),
        ({"convention_valid_until": date.today() - timedelta(days=1)}, "partner", 422, "convention_expired"),
        ({"convention_valid_until": date.today() + timedelta(days=60)}, "partner", 422, "beyond_convention"),
    ],
)
async def test_only_an_administrator_of_a_valid_organisation_may_submit(
    svc: Service, organisation: dict[str, Any], headers: str, status: int, reason: str
) -> None:
    await svc.organisation(**organisation)  # identity.organisation.updated, in effect
    await svc.organisation(OTHER_ORG, department="27", administrators=["partner-27"])
    callers = {
        "partner": svc.partner(),
        "instructor": svc.instructor(),
        "other_partner": svc.partner("partner-27", org=OTHER_ORG),
        "not_listed": svc.partner("former-admin"),
    }
    before = await svc.snapshot()
    r = await svc.client.post("/v1/access-requests", json=svc.submission(), headers=callers[headers])
    assert_problem(r, status, reason)
    assert await svc.snapshot() == before


async def test_an_unknown_organisation_is_refused(service_factory: Callable[..., Awaitable[Service]]) -> None:
    svc = await service_factory()  # no organisation.registered seen yet
    r = await svc.client.post("/v1/access-requests", json=svc.submission(), headers=svc.partner())
    assert_problem(r, 422, "unknown_organisation")
    assert (await svc.snapshot())["requests"] == 0


async def test_without_a_valid_token_nothing_happens(svc: Service) -> None:
    r = await svc.client.post("/v1/access-requests", json=svc.submission())
    assert_problem(r, 401)
    forged = {"Authorization": "Bearer " + svc.partner()["Authorization"].split()[1][:-4] + "AAAA"}
    assert_problem(await svc.client.post("/v1/access-requests", json=svc.submission(), headers=forged), 401)
    assert (await svc.snapshot())["requests"] == 0


async def test_a_second_open_request_for_the_same_person_and_profile_is_refused(svc: Service) -> None:
    first = await svc.submit()
    before = await svc.snapshot(first)
    r = await svc.client.post("/v1/access-requests", json=svc.submission(), headers=svc.partner())
    assert first in assert_problem(r, 409, "duplicate_request")["detail"]
    assert await svc.snapshot(first) == before
    await svc.submit(profile="T2")  # another profile is another request


async def test_a_submission_retried_with_its_idempotency_key_is_created_once(svc: Service) -> None:
    headers = svc.partner() | {"Idempotency-Key": "submit-claire-1"}
    first = await svc.client.post("/v1/access-requests", json=svc.submission(), headers=headers)
    again = await svc.client.post("/v1/access-requests", json=svc.submission(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert (await svc.snapshot())["requests"] == 1 and len(await svc.outbox()) == 1


async def test_the_contact_email_comes_from_the_token_else_from_the_body(svc: Service) -> None:
    no_email = svc.headers(PARTNER, ["partner_admin"], org="org-76-ccas")
    body = svc.submission(contact_email=f"gestion-{svc.tag}@ccas-rouen.test")
    r = await svc.client.post("/v1/access-requests", json=body, headers=no_email)
    assert r.status_code == 201, r.text
    r = await svc.decide(r.json()["id"], svc.instructor(), "request_documents", documents=["convention"])
    assert r.status_code == 200
    await mail_with(f"gestion-{svc.tag}@ccas-rouen.test", "Pièces demandées")
