"""Stage decisions: every transition, every refusal (status, problem body, nothing changed), four eyes,
idempotency keys, concurrent and stale decisions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from cdap_access import domain, store
from cdap_shared import events as ev
from cdap_shared.actor import Actor

from .conftest import ORG, PARTNER, Service, assert_problem, mail_with

pytestmark = pytest.mark.stack


async def test_a_profile_that_is_not_sensitive_is_approved_at_stage_one(svc: Service) -> None:
    request_id = await svc.submit(profile="T2")
    r = await svc.decide(request_id, svc.instructor(), comment="Poste conforme")
    assert r.status_code == 200, r.text
    assert r.json() | {"version": 0} == {
        "id": request_id,
        "state": "approved",
        "stage": None,
        "due": None,
        "version": 0,
    }

    approved = (await svc.outbox())[-1]
    assert approved.type == "access.request.approved" and approved.subject == request_id
    data = ev.parse_data(approved)
    assert isinstance(data, ev.RequestApproved)
    assert (data.request_id, data.organisation_id, data.profile, data.department, data.by) == (
        request_id,
        ORG,
        "T2",
        "76",
        "instructor-1",
    )
    assert data.applicant.family_name == "Martin"
    history = (await svc.get(request_id))["history"]
    assert [(h["action"], h["actor"], h["comment"]) for h in history][-1] == (
        "approved",
        "instructor-1",
        "Poste conforme",
    )
    await mail_with(svc.partner_email(), "accordée")


async def test_a_sensitive_profile_needs_a_manager_after_the_instructor(svc: Service) -> None:
    request_id = await svc.submit(profile="T5")
    r = await svc.decide(request_id, svc.instructor())
    assert (r.status_code, r.json()["state"], r.json()["stage"]) == (200, "awaiting_second_approval", 2)
    stage_approved = (await svc.outbox())[-1]
    assert stage_approved.type == "access.request.stage_approved" and stage_approved.data["stage"] == 1
    await mail_with(svc.mailbox("managers"), "premier niveau", request_id)  # the managers' queue is told

    r = await svc.decide(request_id, svc.manager())
    assert (r.status_code, r.json()["state"]) == (200, "approved")
    assert [e.type for e in await svc.outbox()][-1] == "access.request.approved"
    assert (await svc.get(request_id))["history"][-1]["stage"] == 2


async def test_documents_requested_then_received_return_to_stage_one(svc: Service) -> None:
    request_id = await svc.submit()
    r = await svc.decide(request_id, svc.instructor(), "request_documents", documents=["bulletin d'adhésion"])
    assert (r.status_code, r.json()["state"]) == (200, "documents_requested")
    detail = await svc.get(request_id)
    assert detail["requested_documents"] == ["bulletin d'adhésion"]
    await mail_with(svc.partner_email(), "Pièces demandées", "bulletin d'adhésion")

    r = await svc.upload(request_id)
    assert (r.status_code, r.json()["state"], r.json()["stage"]) == (201, "submitted", 1)
    # The instructor who asked for documents is the natural one to approve: asking is not deciding.
    r = await svc.decide(request_id, svc.instructor())
    assert r.json()["state"] == "awaiting_second_approval"
    types = [e.type.rsplit(".", 1)[1] for e in await svc.outbox()]
    assert types == ["submitted", "documents_requested", "documents_received", "stage_approved"]


async def test_nobody_decides_a_request_that_names_them(svc: Service) -> None:
    """A partner names a CAF instructor (or manager) as the applicant: that person may not decide it,
    whatever the case of the e-mail; another one may."""
    email = f"Paul.Durand-{svc.tag}@caf76.test"
    request_id = await svc.submit(
        profile="T5", applicant=svc.submission()["applicant"] | {"email": email.lower()}
    )
    named_instructor = svc.headers("instructor-9", ["caf_instructor"], department="76", email=email.upper())
    before = await svc.snapshot(request_id)
    for decision, body in (("approve", {}), ("reject", {"comment": "non"})):
        assert_problem(await svc.decide(request_id, named_instructor, decision, **body), 403, "own_request")
    assert await svc.snapshot(request_id) == before

    r = await svc.decide(request_id, svc.instructor())
    assert r.json()["state"] == "awaiting_second_approval"
    named_manager = svc.headers("manager-9", ["caf_manager"], department="76", email=email)
    before = await svc.snapshot(request_id)
    assert_problem(await svc.decide(request_id, named_manager), 403, "own_request")
    assert await svc.snapshot(request_id) == before


async def test_a_rejection_needs_its_reason_and_tells_the_partner(svc: Service) -> None:
    request_id = await svc.submit()
    before = await svc.snapshot(request_id)
    assert_problem(await svc.decide(request_id, svc.instructor(), "reject"), 422, "comment_required")
    assert_problem(await svc.decide(request_id, svc.instructor(), "reject", comment="   "), 422)
    assert await svc.snapshot(request_id) == before

    r = await svc.decide(
        request_id, svc.instructor(), "reject", comment="Le poste ne relève pas du profil T1"
    )
    assert (r.status_code, r.json()["state"]) == (200, "rejected")
    rejected = (await svc.outbox())[-1]
    assert rejected.type == "access.request.rejected"
    assert rejected.data["comment"] == "Le poste ne relève pas du profil T1"
    await mail_with(svc.partner_email(), "refusée", "ne relève pas du profil T1")


async def _at_stage_two(svc: Service, first: str = "instructor-1") -> str:
    request_id = await svc.submit(profile="T1")
    r = await svc.decide(request_id, svc.instructor(first))
    assert r.json()["state"] == "awaiting_second_approval"
    return request_id


async def _closed(svc: Service) -> str:
    request_id = await svc.submit(profile="T2")
    await svc.decide(request_id, svc.instructor(), "reject", comment="non")
    return request_id


async def _awaiting_documents(svc: Service) -> str:
    request_id = await svc.submit()
    await svc.decide(request_id, svc.instructor(), "request_documents", documents=["convention"])
    return request_id


REFUSALS = [
    # (setup, caller, decision, body, status, reason)
    ("submitted", "partner", "approve", {}, 403, "role_not_allowed"),
    ("submitted", "caf_admin", "approve", {}, 403, "role_not_allowed"),
    ("submitted", "instructor_27", "approve", {}, 403, "other_department"),
    ("submitted", "no_department", "approve", {}, 403, "other_department"),
    ("submitted", "insider", "approve", {}, 403, "own_organisation"),
    ("submitted", "manager", "approve", {}, 403, "wrong_stage_role"),
    ("submitted", "instructor", "request_documents", {}, 422, "documents_required"),
    ("submitted", "instructor", "maybe", {}, 422, None),
    ("stage_two", "other_instructor", "approve", {}, 403, "wrong_stage_role"),
    ("stage_two", "instructor", "approve", {}, 403, "already_decided"),
    ("stage_two_both", "both_roles", "approve", {}, 403, "already_decided"),
    ("stage_two", "manager", "request_documents", {"documents": ["x"]}, 409, "not_at_this_stage"),
    ("awaiting_documents", "instructor", "approve", {}, 409, "awaiting_documents"),
    ("closed", "other_instructor", "approve", {}, 409, "request_closed"),
    ("closed", "manager", "reject", {"comment": "non"}, 409, "request_closed"),
]


@pytest.mark.parametrize(("setup", "caller", "decision", "body", "status", "reason"), REFUSALS)
async def test_refused_decisions_change_nothing(
    svc: Service,
    setup: str,
    caller: str,
    decision: str,
    body: dict[str, object],
    status: int,
    reason: str | None,
) -> None:
    setups: dict[str, Callable[[], Awaitable[str]]] = {
        "submitted": svc.submit,
        "stage_two": lambda: _at_stage_two(svc),
        "stage_two_both": lambda: _at_stage_two(svc, first="both-roles"),
        "awaiting_documents": lambda: _awaiting_documents(svc),
        "closed": lambda: _closed(svc),
    }
    request_id = await setups[setup]()
    callers = {
        "partner": svc.partner(),
        "caf_admin": svc.headers("admin-76", ["caf_admin"], department="76"),
        "instructor": svc.instructor(),
        "other_instructor": svc.instructor("instructor-2"),
        "instructor_27": svc.instructor("instructor-27", department="27"),
        "no_department": svc.headers("instructor-x", ["caf_instructor"]),
        "insider": svc.headers("insider", ["caf_instructor"], org=ORG, department="76"),
        "manager": svc.manager(),
        "both_roles": svc.headers("both-roles", ["caf_instructor", "caf_manager"], department="76"),
    }
    before = await svc.snapshot(request_id)
    r = await svc.decide(request_id, callers[caller], decision, **body)
    problem = assert_problem(r, status, reason)
    if reason == "already_decided":
        assert "four eyes" in problem["detail"]
    assert await svc.snapshot(request_id) == before


async def test_the_submitting_administrator_may_not_decide_even_with_a_caf_role(svc: Service) -> None:
    request_id = await svc.submit()
    before = await svc.snapshot(request_id)
    odd = svc.headers(PARTNER, ["caf_instructor"], department="76")  # same person, CAF token
    assert_problem(await svc.decide(request_id, odd), 403, "own_organisation")
    assert await svc.snapshot(request_id) == before


async def test_unknown_or_malformed_request_ids(svc: Service) -> None:
    assert_problem(
        await svc.decide("01a21c0d-0000-7000-8000-000000000000", svc.instructor()), 404, "unknown_request"
    )
    assert_problem(await svc.decide("not-a-uuid", svc.instructor()), 422)


async def test_a_retry_with_the_same_idempotency_key_has_one_effect(svc: Service) -> None:
    request_id = await _at_stage_two(svc)
    headers = svc.manager() | {"Idempotency-Key": "decision-7f3a"}
    first = await svc.decide(request_id, headers, comment="ok")
    events_after_first = len(await svc.outbox())
    history_after_first = len((await svc.get(request_id))["history"])
    again = await svc.decide(request_id, headers, comment="ok")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and first.json()["state"] == "approved"
    assert len(await svc.outbox()) == events_after_first
    assert len((await svc.get(request_id))["history"]) == history_after_first

    before = await svc.snapshot(request_id)
    other_body = await svc.decide(request_id, headers, "reject", comment="finalement non")
    assert_problem(other_body, 422, "idempotency_key_reused")
    assert await svc.snapshot(request_id) == before
    # Without the key the same call is judged afresh: this manager already decided, another is too late.
    assert_problem(await svc.decide(request_id, svc.manager(), comment="ok"), 403, "already_decided")
    assert_problem(
        await svc.decide(request_id, svc.manager("manager-2"), comment="ok"), 409, "request_closed"
    )


async def test_two_concurrent_decisions_one_wins_the_other_gets_409(svc: Service) -> None:
    for i in range(3):  # a few rounds, so both interleavings get a chance
        request_id = await svc.submit(
            profile="T2", applicant={**svc.submission()["applicant"], "email": f"x{i}-{svc.tag}@ccas.test"}
        )
        results = await asyncio.gather(
            svc.decide(request_id, svc.instructor("instructor-1"), comment="a"),
            svc.decide(request_id, svc.instructor("instructor-2"), "reject", comment="b"),
        )
        assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
        loser = next(r for r in results if r.status_code == 409)
        assert_problem(loser, 409)
        assert loser.json()["reason"] in ("concurrent_modification", "request_closed")
        detail = await svc.get(request_id)
        decisions = [h for h in detail["history"] if h["action"] in ("approved", "rejected")]
        assert len(decisions) == 1 and detail["version"] == 2
        types = [e.type for e in await svc.outbox() if e.subject == request_id]
        assert len([t for t in types if t.endswith(("approved", "rejected"))]) == 1


async def test_the_version_check_refuses_a_write_based_on_a_stale_read(svc: Service) -> None:
    """The losing side of a race, made deterministic: a row read before another decision committed."""
    request_id = await svc.submit(profile="T2")
    async with svc.app.state.sessions() as session:
        stale = await store.load(session, request_id)
    assert stale is not None
    assert (await svc.decide(request_id, svc.instructor("instructor-2"))).status_code == 200
    step = domain.decide(
        store.facts_of(stale),
        Actor("instructor-1", frozenset({"caf_instructor"}), None, "76"),
        domain.Decision.APPROVE,
    )
    async with svc.app.state.sessions() as session:
        with pytest.raises(store.StaleRequest):
            await store.record_step(
                session, svc.settings, stale, step, actor="instructor-1", now=stale.submitted_at
            )
        await session.rollback()
    assert len([e for e in await svc.outbox() if e.type == "access.request.approved"]) == 1


async def test_a_decision_with_a_stale_if_match_is_409(svc: Service) -> None:
    request_id = await svc.submit(profile="T1")
    version = (await svc.get(request_id))["version"]
    await svc.decide(request_id, svc.instructor())
    before = await svc.snapshot(request_id)
    r = await svc.decide(request_id, svc.manager() | {"If-Match": f'"{version}"'})
    assert_problem(r, 409, "stale_version")
    assert await svc.snapshot(request_id) == before
    r = await svc.decide(request_id, svc.manager() | {"If-Match": f'"{version + 1}"'})
    assert r.status_code == 200 and r.json()["state"] == "approved"


async def test_withdrawal_by_the_partner_while_open(svc: Service) -> None:
    request_id = await svc.submit()
    for headers, status, reason in (
        (svc.instructor(), 403, "role_not_allowed"),
        (svc.partner("partner-27", org="org-27"), 403, "not_your_organisation"),
    ):
        before = await svc.snapshot(request_id)
        r = await svc.client.post(f"/v1/access-requests/{request_id}/withdraw", headers=headers)
        assert_problem(r, status, reason)
        assert await svc.snapshot(request_id) == before

    r = await svc.client.post(
        f"/v1/access-requests/{request_id}/withdraw",
        json={"comment": "L'agent a quitté le service"},
        headers=svc.partner(),
    )
    assert (r.status_code, r.json()["state"]) == (200, "withdrawn")
    assert (await svc.outbox())[-1].type == "access.request.withdrawn"
    await mail_with(svc.mailbox("instructors"), "retirée", request_id)

    before = await svc.snapshot(request_id)
    r = await svc.client.post(f"/v1/access-requests/{request_id}/withdraw", headers=svc.partner())
    assert_problem(r, 409, "request_closed")
    assert_problem(await svc.decide(request_id, svc.instructor()), 409, "request_closed")
    assert await svc.snapshot(request_id) == before


async def test_the_comment_thread_reaches_the_other_side(svc: Service) -> None:
    request_id = await svc.submit()
    r = await svc.client.post(
        f"/v1/access-requests/{request_id}/comments",
        json={"text": "Pouvez-vous préciser le poste ?"},
        headers=svc.instructor(),
    )
    assert r.status_code == 201, r.text
    r = await svc.client.post(
        f"/v1/access-requests/{request_id}/comments",
        json={"text": "Assistante sociale de secteur"},
        headers=svc.partner(),
    )
    assert r.status_code == 201, r.text
    history = (await svc.get(request_id))["history"]
    assert [(h["action"], h["actor"], h["comment"]) for h in history[1:]] == [
        ("commented", "instructor-1", "Pouvez-vous préciser le poste ?"),
        ("commented", PARTNER, "Assistante sociale de secteur"),
    ]
    await mail_with(svc.partner_email(), "commentaire", "préciser le poste")
    await mail_with(svc.mailbox("instructors"), "commentaire", "Assistante sociale de secteur")

    before = await svc.snapshot(request_id)
    for headers in (svc.instructor("instructor-27", department="27"), svc.partner("p27", org="org-27")):
        r = await svc.client.post(
            f"/v1/access-requests/{request_id}/comments", json={"text": "?"}, headers=headers
        )
        assert_problem(r, 403)
    assert_problem(
        await svc.client.post(
            f"/v1/access-requests/{request_id}/comments", json={"text": ""}, headers=svc.partner()
        ),
        422,
    )
    assert await svc.snapshot(request_id) == before
