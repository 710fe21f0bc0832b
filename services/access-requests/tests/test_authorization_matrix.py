# ruff: noqa: E501 - the matrix is a table: one endpoint per line, one column per principal
"""The authorization matrix of access-requests: every endpoint x every role, inside and outside the
request's organisation or department, as one explicit table (docs/access-requests.md, "Who may do what").

A cell is the status the call must get: 401 without a token, 403 (problem+json, nothing changed: request,
history, documents, outbox, mail queue, removals) when the caller may not, otherwise the business answer.
`HID` is a 200 that must not show the other organisation's or department's request (the queue is
filtered by scope rather than refused).

The resource is a request of organisation A (department 76). Columns: `~` marks the principal outside it:
the partner administrator of organisation B (department 27), CAF staff of the CAF of 27. Partner users,
partner systems and auditors may do nothing here but read the profile catalogue, wherever they are.

`test_every_endpoint_has_a_row` reads the app's OpenAPI document: a new /v1 endpoint fails it until its
row is written here, so nobody adds an endpoint without deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from httpx import Response
from sqlalchemy import text

from cdap_access.app import build
from cdap_shared import events as ev
from cdap_shared.envelope import new_event_id
from cdap_testing.authz_table import HIDDEN
from cdap_testing.matrix import assert_complete, table_mismatches

from .conftest import ORG, OTHER_ORG, PARTNER, PDF, Service

pytestmark = pytest.mark.stack

HID = HIDDEN
Expect = int | str

# fmt: off
PRINCIPALS = ("anon", "user", "padm", "padm~", "sys", "ins", "ins~", "mgr", "mgr~", "adm", "adm~", "aud")

MATRIX: dict[str, tuple[Expect, ...]] = {
    #                                                   anon  user  padm  padm~ sys   ins   ins~  mgr   mgr~  adm   adm~  aud
    # A partner administrator asks for their own organisation only.
    "POST /v1/access-requests":                        (401,  403,  201,  403,  403,  403,  403,  403,  403,  403,  403,  403),
    # The queue: an organisation's partner admins, its department's instructors, managers and CAF admins.
    "GET /v1/access-requests":                         (401,  403,  200,  HID,  403,  200,  HID,  200,  HID,  200,  HID,  403),
    "GET /v1/access-requests?department=76":           (401,  403,  200,  HID,  403,  200,  403,  200,  403,  200,  403,  403),
    "GET /v1/access-requests/{id}":                    (401,  403,  200,  403,  403,  200,  403,  200,  403,  200,  403,  403),
    "GET /v1/access-requests/{id}/documents/{doc}":    (401,  403,  200,  403,  403,  200,  403,  200,  403,  200,  403,  403),
    "POST /v1/access-requests/{id}/comments":          (401,  403,  201,  403,  403,  201,  403,  201,  403,  201,  403,  403),
    # Stage 1 is an instructor's of the department, stage 2 a manager's; CAF admins read but do not decide.
    "POST /v1/access-requests/{id}/decisions (stage 1)":
                                                       (401,  403,  403,  403,  403,  200,  403,  403,  403,  403,  403,  403),
    "POST /v1/access-requests/{id}/decisions (stage 2)":
                                                       (401,  403,  403,  403,  403,  403,  403,  200,  403,  403,  403,  403),
    # The partner's side of a request, and removal of its own organisation's grants.
    "POST /v1/access-requests/{id}/documents":         (401,  403,  201,  403,  403,  403,  403,  403,  403,  403,  403,  403),
    "POST /v1/access-requests/{id}/withdraw":          (401,  403,  200,  403,  403,  403,  403,  403,  403,  403,  403,  403),
    "POST /v1/grants/{grant}/removal-requests":        (401,  403,  202,  403,  403,  403,  403,  403,  403,  403,  403,  403),
    # The catalogue of profiles is no secret to anyone signed in.
    "GET /v1/profiles":                                (401,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200),
}
# fmt: on

WHO: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "user": ("partner-user-1", ["partner_user"], {"org": ORG}),
    "padm": (PARTNER, ["partner_admin"], {"org": ORG}),
    "padm~": ("partner-admin-b", ["partner_admin"], {"org": OTHER_ORG}),
    "sys": ("cdap-client-1", ["partner_system"], {"org": ORG}),
    "ins": ("instructor-1", ["caf_instructor"], {"department": "76"}),
    "ins~": ("instructor-27", ["caf_instructor"], {"department": "27"}),
    "mgr": ("manager-1", ["caf_manager"], {"department": "76"}),
    "mgr~": ("manager-27", ["caf_manager"], {"department": "27"}),
    "adm": ("caf-admin-76", ["caf_admin"], {"department": "76"}),
    "adm~": ("caf-admin-27", ["caf_admin"], {"department": "27"}),
    "aud": ("auditor-1", ["auditor"], {"department": "76"}),
}


@dataclass
class World:
    """Organisations A (`ORG`, 76) and B (`OTHER_ORG`, 27); a submitted request of A with a document; a grant
    of A. Rows whose allowed call changes the request's state get a fresh request for every call."""

    svc: Service
    request: str
    document: str
    grant: str

    def headers(self, column: str) -> dict[str, str]:
        if column == "anon":
            return {}
        sub, roles, claims = WHO[column]
        email = {"email": self.svc.partner_email(sub)} if "org" in claims else {}
        return self.svc.headers(sub, roles, **claims, **email)

    async def fresh(self, stage: int = 1) -> str:
        """A new T1 (sensitive) request of A, at stage 1 or, approved by another instructor, at stage 2."""
        request_id = await self.svc.submit(applicant=applicant())
        if stage == 2:
            r = await self.svc.decide(request_id, self.svc.instructor("instructor-setup"))
            assert r.status_code == 200 and r.json()["state"] == "awaiting_second_approval", r.text
        return request_id


def applicant() -> dict[str, str]:
    # A new person each time: a second open request for the same person and profile is a 409.
    return {
        "family_name": "Martin",
        "given_name": "Claire",
        "email": f"matrix-{new_event_id()[-12:]}@ccas-rouen.test",
        "job_title": "Assistante sociale",
    }


# How each row is called: (path, keyword arguments for httpx, the request id a read shows or hides).
Call = tuple[str, dict[str, Any], str | None]
CALLS: dict[str, Callable[[World], Awaitable[Call]]] = {}


def calls(row: str) -> Callable[[Callable[[World], Awaitable[Call]]], Callable[[World], Awaitable[Call]]]:
    def register(make: Callable[[World], Awaitable[Call]]) -> Callable[[World], Awaitable[Call]]:
        CALLS[row] = make
        return make

    return register


@calls("POST /v1/access-requests")
async def _submit(w: World) -> Call:
    return "/v1/access-requests", {"json": w.svc.submission(applicant=applicant())}, None


@calls("GET /v1/access-requests")
async def _queue(w: World) -> Call:
    return "/v1/access-requests", {}, w.request


@calls("GET /v1/access-requests?department=76")
async def _queue_76(w: World) -> Call:
    return "/v1/access-requests", {"params": {"department": "76"}}, w.request


@calls("GET /v1/access-requests/{id}")
async def _detail(w: World) -> Call:
    return f"/v1/access-requests/{w.request}", {}, w.request


@calls("GET /v1/access-requests/{id}/documents/{doc}")
async def _document(w: World) -> Call:
    return f"/v1/access-requests/{w.request}/documents/{w.document}", {}, None


@calls("POST /v1/access-requests/{id}/comments")
async def _comment(w: World) -> Call:
    return f"/v1/access-requests/{w.request}/comments", {"json": {"text": "Une question"}}, None


@calls("POST /v1/access-requests/{id}/decisions (stage 1)")
async def _stage_1(w: World) -> Call:
    return f"/v1/access-requests/{await w.fresh(1)}/decisions", {"json": {"decision": "approve"}}, None


@calls("POST /v1/access-requests/{id}/decisions (stage 2)")
async def _stage_2(w: World) -> Call:
    return f"/v1/access-requests/{await w.fresh(2)}/decisions", {"json": {"decision": "approve"}}, None


@calls("POST /v1/access-requests/{id}/documents")
async def _upload(w: World) -> Call:
    files = [("files", ("convention.pdf", PDF, "application/pdf"))]
    return f"/v1/access-requests/{w.request}/documents", {"files": files}, None


@calls("POST /v1/access-requests/{id}/withdraw")
async def _withdraw(w: World) -> Call:
    return f"/v1/access-requests/{await w.fresh()}/withdraw", {}, None


@calls("POST /v1/grants/{grant}/removal-requests")
async def _removal(w: World) -> Call:
    return f"/v1/grants/{w.grant}/removal-requests", {"json": {"comment": "A quitté le CCAS"}}, None


@calls("GET /v1/profiles")
async def _profiles(w: World) -> Call:
    return "/v1/profiles", {}, None


async def make_world(svc: Service) -> World:
    await svc.organisation(
        OTHER_ORG,
        siret="55204944776279",
        name="Bailleur de l'Eure",
        department="27",
        administrators=["partner-admin-b"],
    )
    request_id = await svc.submit(applicant=applicant())
    r = await svc.upload(request_id)
    assert r.status_code == 201, r.text
    today = date.today()
    await svc.apply(
        "identity.grant.issued",
        "user-of-a",
        ev.GrantIssued(
            grant_id="g-matrix",
            user_id="user-of-a",
            organisation_id=ORG,
            organisation_siret="21760540100033",
            profile="T1",
            department="76",
            valid_from=today,
            valid_until=today + timedelta(days=100),
        ),
    )
    return World(svc, request_id, r.json()["documents"][0]["id"], "g-matrix")


# Everything a refused call must leave as it was, read in one round trip (the table reads it twice per
# refusal). Append-only tables by their highest id: housekeeping may purge what was sent, but a new row
# always gets a higher id.
SNAPSHOT = text(
    """
    SELECT concat_ws(' | ',
      (SELECT string_agg(concat_ws(',', id, state, version), ';' ORDER BY id) FROM access_request),
      (SELECT string_agg(id, ';' ORDER BY id) FROM access_request_document),
      (SELECT string_agg(concat_ws(',', grant_id, status, removal_request_id), ';' ORDER BY grant_id)
         FROM access_grant),
      (SELECT string_agg(id, ';' ORDER BY id) FROM access_removal_request),
      (SELECT max(id) FROM access_request_history),
      (SELECT max(id) FROM outbox),
      (SELECT max(id) FROM mail_outbox))
    """
)


async def snapshot(svc: Service) -> str:
    async with svc.app.state.sessions() as s:
        return str((await s.execute(SNAPSHOT)).scalar_one())


async def test_the_matrix(svc: Service) -> None:
    """Every row x every column; all mismatches are reported together, as (row, column, what happened)."""
    w = await make_world(svc)

    def send(method: str, path: str, column: str, kwargs: dict[str, Any]) -> Awaitable[Response]:
        return svc.client.request(method, path, headers=w.headers(column), **kwargs)

    wrong = await table_mismatches(MATRIX, PRINCIPALS, lambda row: CALLS[row](w), send, lambda: snapshot(svc))
    assert not wrong, "cells that differ from the table:\n" + "\n".join(map(repr, wrong))


def test_every_endpoint_has_a_row() -> None:
    assert_complete(build().openapi(), MATRIX, CALLS, PRINCIPALS, WHO)
