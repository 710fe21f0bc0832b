"""The approvers' queue: oldest due date first, keyset pages, each caller inside their own scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cdap_shared.http import current_time

from .conftest import ORG, Service, assert_problem

pytestmark = pytest.mark.stack


async def _submit_at(svc: Service, moment: datetime, headers: dict[str, str], **overrides: Any) -> str:
    svc.app.dependency_overrides[current_time] = lambda: moment
    try:
        return await svc.submit(headers=headers, **overrides)
    finally:
        del svc.app.dependency_overrides[current_time]


async def _list(svc: Service, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await svc.client.get("/v1/access-requests", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _all_pages(svc: Service, headers: dict[str, str], **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await _list(svc, headers, **params, **({"cursor": cursor} if cursor else {}))
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


@pytest.fixture
async def queue(svc: Service) -> dict[str, str]:
    """Requests in two departments and two organisations of 76, submitted on different days."""
    await svc.organisation("org-76-bailleur", administrators=["p76b"], name="Rouen Habitat")
    await svc.organisation("org-27", department="27", administrators=["p27"], name="CCAS d'Évreux")
    now = datetime.now(UTC)
    person = svc.submission()["applicant"]

    def who(n: str) -> dict[str, Any]:
        return {"applicant": {**person, "email": f"{n}-{svc.tag}@partner.test"}}

    ids = {
        "closed": await _submit_at(svc, now - timedelta(days=30), svc.partner(), **who("closed")),
        "oldest": await _submit_at(svc, now - timedelta(days=10), svc.partner(), **who("oldest")),
        "bailleur": await _submit_at(
            svc,
            now - timedelta(days=3),
            svc.partner("p76b", org="org-76-bailleur"),
            organisation_id="org-76-bailleur",
            profile="T2",
            **who("b"),
        ),
        "newest": await _submit_at(svc, now, svc.partner(), **who("newest")),
        "other_department": await _submit_at(
            svc,
            now - timedelta(days=20),
            svc.partner("p27", org="org-27"),
            organisation_id="org-27",
            department="27",
            **who("e"),
        ),
    }
    r = await svc.client.post(f"/v1/access-requests/{ids['closed']}/withdraw", headers=svc.partner())
    assert r.status_code == 200
    return ids


async def test_the_queue_is_ordered_by_due_date_and_limited_to_the_department(
    svc: Service, queue: dict[str, str]
) -> None:
    page = await _list(svc, svc.instructor())
    assert [i["id"] for i in page["items"]] == [
        queue["oldest"],
        queue["bailleur"],
        queue["newest"],
        queue["closed"],
    ]
    dues = [i["due"] for i in page["items"]]
    assert dues[:3] == sorted(dues[:3]) and dues[3] is None and page["next_cursor"] is None
    assert page["items"][0]["overdue"] is True and page["items"][2]["overdue"] is False
    assert {i["department"] for i in page["items"]} == {"76"}

    assert [i["id"] for i in (await _list(svc, svc.manager()))["items"]][:3] == [
        queue["oldest"],
        queue["bailleur"],
        queue["newest"],
    ]
    assert [i["id"] for i in (await _list(svc, svc.instructor("i27", department="27")))["items"]] == [
        queue["other_department"]
    ]
    submitted = await _list(svc, svc.instructor(), state="submitted", department="76")
    assert [i["id"] for i in submitted["items"]] == [queue["oldest"], queue["bailleur"], queue["newest"]]


async def test_keyset_pages_cover_everything_once(svc: Service, queue: dict[str, str]) -> None:
    first = await _list(svc, svc.instructor(), limit=2)
    assert [i["id"] for i in first["items"]] == [queue["oldest"], queue["bailleur"]]
    assert first["next_cursor"]
    assert await _all_pages(svc, svc.instructor(), limit=1) == [
        queue["oldest"],
        queue["bailleur"],
        queue["newest"],
        queue["closed"],
    ]
    # A request decided between two pages neither repeats nor hides the others.
    await svc.decide(queue["oldest"], svc.instructor(), "reject", comment="non")
    second = await _list(svc, svc.instructor(), limit=2, cursor=first["next_cursor"])
    assert [i["id"] for i in second["items"]] == [queue["newest"], queue["closed"]]


async def test_partner_administrators_see_their_organisation_only(
    svc: Service, queue: dict[str, str]
) -> None:
    mine = await _all_pages(svc, svc.partner(), limit=2)
    assert mine == [queue["oldest"], queue["newest"], queue["closed"]]
    assert (await _list(svc, svc.partner(), department="27"))["items"] == []
    theirs = await _all_pages(svc, svc.partner("p76b", org="org-76-bailleur"))
    assert theirs == [queue["bailleur"]]
    r = await svc.client.get(f"/v1/access-requests/{queue['bailleur']}", headers=svc.partner())
    assert_problem(r, 403, "not_your_organisation")


async def test_queue_refusals(svc: Service, queue: dict[str, str]) -> None:
    r = await svc.client.get("/v1/access-requests", params={"department": "27"}, headers=svc.instructor())
    assert_problem(r, 403, "other_department")
    r = await svc.client.get(f"/v1/access-requests/{queue['other_department']}", headers=svc.instructor())
    assert_problem(r, 403, "other_department")
    assert_problem(
        await svc.client.get("/v1/access-requests", headers=svc.headers("u", ["partner_user"], org=ORG)), 403
    )
    assert_problem(await svc.client.get("/v1/access-requests", headers=svc.headers("a", ["auditor"])), 403)
    r = await svc.client.get(
        "/v1/access-requests", params={"cursor": "not-a-cursor"}, headers=svc.instructor()
    )
    assert_problem(r, 400, "bad_cursor")
    r = await svc.client.get("/v1/access-requests", params={"state": "pending"}, headers=svc.instructor())
    assert_problem(r, 422)
    r = await svc.client.get("/v1/access-requests", params={"limit": 0}, headers=svc.instructor())
    assert_problem(r, 422)


async def test_the_work_list_names_organisations_counts_and_keeps_what_awaits_the_viewer(
    svc: Service, queue: dict[str, str]
) -> None:
    everything = await _list(svc, svc.instructor())
    assert everything["total"] == 4
    by_id = {i["id"]: i for i in everything["items"]}
    assert by_id[queue["bailleur"]]["organisation_name"] == "Rouen Habitat"
    assert by_id[queue["oldest"]]["organisation_name"] == "CCAS de Rouen"
    assert by_id[queue["oldest"]]["organisation_siret"] == "21760540100033"
    # Open requests count their business days left (negative once late); closed ones have none.
    assert by_id[queue["oldest"]]["business_days_left"] < 0 < by_id[queue["newest"]]["business_days_left"]
    assert by_id[queue["closed"]]["business_days_left"] is None
    # The request itself names its organisation too.
    assert (await svc.get(queue["bailleur"], svc.instructor()))["organisation_name"] == "Rouen Habitat"

    # The oldest (T1, sensitive) approved at stage 1: it now waits for a manager, not for instructors.
    r = await svc.decide(queue["oldest"], svc.instructor(), "approve")
    assert r.status_code == 200, r.text
    for_instructor = await _list(svc, svc.instructor("instructor-2"), awaiting_me="true")
    assert [i["id"] for i in for_instructor["items"]] == [queue["bailleur"], queue["newest"]]
    assert for_instructor["total"] == 2
    for_manager = await _list(svc, svc.manager(), awaiting_me="true")
    assert [i["id"] for i in for_manager["items"]] == [queue["oldest"]] and for_manager["total"] == 1
    # Four eyes: the instructor who approved it has nothing of it left to decide, even with both roles.
    both = svc.headers("instructor-1", ["caf_instructor", "caf_manager"], department="76")
    assert queue["oldest"] not in [i["id"] for i in (await _list(svc, both, awaiting_me="true"))["items"]]

    # Search by organisation name (any case, any part), SIRET start, or the applicant's name.
    habitat = await _list(svc, svc.instructor(), q="habitat")
    assert [i["id"] for i in habitat["items"]] == [queue["bailleur"]] and habitat["total"] == 1
    by_siret = await _list(svc, svc.instructor(), q="2176054")
    assert {i["id"] for i in by_siret["items"]} == {
        queue[k] for k in ("oldest", "bailleur", "newest", "closed")
    }
    assert (await _list(svc, svc.instructor(), q="%"))["items"] == []  # a wildcard is a character
    assert (await _list(svc, svc.instructor(), q="Évreux"))["items"] == []  # another department's
    assert len((await _list(svc, svc.instructor(), q="claire"))["items"]) == 4
