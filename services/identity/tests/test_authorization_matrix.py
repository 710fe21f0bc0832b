# ruff: noqa: E501 - the matrix is a table: one endpoint per line, one column per principal
"""The authorization matrix of identity: every endpoint x every role, inside and outside the resource's
organisation or department, as one explicit table.

A cell is the status the call must get: 401 without a token, 403 (problem+json, nothing changed) when the
role may not, otherwise the business answer (2xx, or a 4xx that is not about authorization). `HID` is a
200 that must not show the resource of the other organisation or department (a list filtered by scope).

Columns: `~` marks the principal outside the resource. Partner principals belong to organisation A
(department 76, the resource's) or, with `~`, to organisation B (department 27); CAF staff and auditors
work for the CAF of 76 or, with `~`, of 27. CAF admins and auditors are national in this service
(they list every grant; a CAF admin may act on any account), so their `~` column allows what theirs does.

`test_every_endpoint_has_a_row` reads the app's OpenAPI document: a new /v1 endpoint fails it until its
row is written here, so nobody adds an endpoint without deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from httpx import Response
from sqlalchemy import text

from cdap_identity import domain
from cdap_identity.app import build
from cdap_identity.keys import issue_access_token
from cdap_identity.models import Client, Grant, Organisation, User
from cdap_testing.authz_table import HIDDEN
from cdap_testing.matrix import assert_complete, table_mismatches

from .conftest import STRONG, Identity, unique_email

pytestmark = pytest.mark.stack

HID = HIDDEN
Expect = int | str

# fmt: off
PRINCIPALS = ("anon", "user", "user~", "padm", "padm~", "sys", "sys~", "ins", "ins~", "mgr", "mgr~", "adm", "adm~", "aud", "aud~")

MATRIX: dict[str, tuple[Expect, ...]] = {
    #                                            anon  user  user~ padm  padm~ sys   sys~  ins   ins~  mgr   mgr~  adm   adm~  aud   aud~
    # Public: a bearer token changes nothing (the credentials are in the form or the body).
    "POST /v1/token":                           (400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400),
    "POST /v1/activations":                     (400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400),
    "POST /v1/revoke":                          (200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200),
    "POST /v1/totp/enrolment":                  (400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400),
    "POST /v1/totp/enrolment/confirm":          (400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400,  400),
    "POST /v1/introspect":                      (200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200,  200),
    # Anyone signed in; a partner system has no account.
    "GET /v1/me":                               (401,  200,  200,  200,  200,  404,  404,  200,  200,  200,  200,  200,  200,  200,  200),
    # Organisations: created and overseen by CAF admins; read by CAF staff of its department, auditors and its own members.
    "POST /v1/organisations":                   (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  201,  201,  403,  403),
    "GET /v1/organisations/{A}":                (401,  200,  403,  200,  403,  200,  403,  200,  403,  200,  403,  200,  200,  200,  200),
    # The list: CAF staff (instructors and managers: their department's) and auditors.
    "GET /v1/organisations?q=a":                (401,  403,  403,  403,  403,  403,  403,  200,  200,  200,  200,  200,  200,  200,  200),
    "PATCH /v1/organisations/{A}":              (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "POST /v1/organisations/{A}/restore-delegation":
                                                (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    # CAF staff accounts and account actions: CAF admins only.
    "POST /v1/users":                           (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  201,  201,  403,  403),
    # The account list: CAF admins and auditors every account, CAF staff their department's, partner admins their organisation's.
    "GET /v1/users?id={user}":                  (401,  403,  403,  200,  HID,  403,  403,  200,  HID,  200,  HID,  200,  200,  200,  200),
    # A new activation link: a CAF admin for anyone, a partner admin for their organisation (another's answers as unknown).
    "POST /v1/users/{user}/resend-activation":  (401,  403,  403,  200,  404,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "POST /v1/users/{user}/suspend":            (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "POST /v1/users/{user}/reinstate":          (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "POST /v1/users/{user}/unlock":             (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "POST /v1/users/{user}/force-password-reset":
                                                (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    # Grants: listed within the caller's scope; revoked by a CAF admin or a manager of the grant's department.
    "GET /v1/grants":                           (401,  403,  403,  200,  HID,  403,  403,  200,  HID,  200,  HID,  200,  200,  200,  200),
    "GET /v1/grants?department=76":             (401,  403,  403,  200,  HID,  403,  403,  200,  HID,  200,  HID,  200,  200,  200,  200),
    "POST /v1/grants/{grant}/revoke":           (401,  403,  403,  403,  403,  403,  403,  403,  403,  200,  403,  200,  200,  403,  403),
    # A partner system's credentials: the grant's organisation administrators, or a CAF admin.
    "POST /v1/clients":                         (401,  403,  403,  201,  403,  403,  403,  403,  403,  403,  403,  201,  201,  403,  403),
    # ... listed, given a new secret, disabled and deleted by the same people (auditors read them in the audit log).
    "GET /v1/clients?organisation={A}":         (401,  403,  403,  200,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "POST /v1/clients/{client}/rotate":         (401,  403,  403,  200,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "POST /v1/clients/{client}/disable":        (401,  403,  403,  200,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
    "DELETE /v1/clients/{client}":              (401,  403,  403,  204,  403,  403,  403,  403,  403,  403,  403,  204,  204,  403,  403),
    # Last: withdrawing A's delegation changes what A's admins may do afterwards (no more clients).
    "POST /v1/organisations/{A}/withdraw-delegation":
                                                (401,  403,  403,  403,  403,  403,  403,  403,  403,  403,  403,  200,  200,  403,  403),
}
# fmt: on


@dataclass(frozen=True)
class Who:
    roles: tuple[str, ...]
    side: str  # "A" (the resource's organisation, department 76) or "B" (organisation B, department 27)
    person: bool = True  # False: a partner system (no account)


WHO = {
    "user": Who(("partner_user",), "A"),
    "user~": Who(("partner_user",), "B"),
    "padm": Who(("partner_admin",), "A"),
    "padm~": Who(("partner_admin",), "B"),
    "sys": Who(("partner_system",), "A", person=False),
    "sys~": Who(("partner_system",), "B", person=False),
    "ins": Who(("caf_instructor",), "A"),
    "ins~": Who(("caf_instructor",), "B"),
    "mgr": Who(("caf_manager",), "A"),
    "mgr~": Who(("caf_manager",), "B"),
    "adm": Who(("caf_admin",), "A"),
    "adm~": Who(("caf_admin",), "B"),
    "aud": Who(("auditor",), "A"),
    "aud~": Who(("auditor",), "B"),
}
DEPARTMENT = {"A": "76", "B": "27"}


@dataclass
class World:
    """What the calls act on: organisations A and B, an account of A, grants of A, the callers' accounts."""

    idp: Identity
    org: dict[str, str]  # "A" / "B" -> organisation id
    target_user: str
    grant_listed: str
    grant_revoked: str
    grant_for_client: str
    callers: dict[str, str]  # column -> user id (or client id for partner systems)
    client: str  # a partner system of A, rotated and disabled by the rows that may
    deletable: list[str]  # partner systems of A, one per call of the DELETE row
    created: int = 0

    def headers(self, column: str) -> dict[str, str]:
        if column == "anon":
            return {}
        who = WHO[column]
        partner = who.roles[0].startswith("partner")
        extra = {"department": DEPARTMENT[who.side]} if who.person else {}
        token = issue_access_token(
            self.idp.app.state.key_ring,
            sub=self.callers[column],
            org=self.org[who.side] if partner else None,
            roles=who.roles,
            grants=[],
            now=datetime.now(UTC),
            extra=extra,
        )
        return {"Authorization": f"Bearer {token.token}"}

    def next_deletable(self) -> str:
        return self.deletable.pop()

    def next_siret(self) -> str:
        self.created += 1
        return siret(9000 + self.created)


def siret(seed: int) -> str:
    """A valid SIRET (Luhn key), distinct per seed: every allowed creation needs a new one."""
    base = f"{seed:013d}"
    return next(base + d for d in "0123456789" if domain.valid_siret(base + d))


# How each row is called: (path with the world's ids, keyword arguments for httpx, the id a read shows).
Call = tuple[str, dict[str, Any], str | None]


def _organisation_body(w: World) -> dict[str, Any]:
    return {
        "siret": w.next_siret(),
        "name": "Bailleur de la matrice",
        "kind": "bailleur",
        "department": "76",
        "convention": {"reference": "CONV-76-MATRIX", "valid_until": "2030-12-31"},
        "administrators": [{"email": unique_email("gest"), "family_name": "Durand", "given_name": "Claire"}],
    }


def _staff_body(w: World) -> dict[str, Any]:
    email = unique_email("staff")
    return {
        "email": email,
        "family_name": "Leroy",
        "given_name": "Anne",
        "roles": ["caf_instructor"],
        "department": "76",
    }


CALLS: dict[str, Callable[[World], Call]] = {
    "POST /v1/token": lambda w: ("/v1/token", {"data": {"grant_type": "matrix"}}, None),
    "POST /v1/activations": lambda w: (
        "/v1/activations",
        {"json": {"token": "x" * 32, "password": STRONG}},
        None,
    ),
    "POST /v1/revoke": lambda w: ("/v1/revoke", {"data": {"token": "not-a-refresh-token"}}, None),
    # The enrolment ticket is the credential: without a live one, a bearer token opens nothing.
    "POST /v1/totp/enrolment": lambda w: ("/v1/totp/enrolment", {"json": {"ticket": "x" * 43}}, None),
    "POST /v1/totp/enrolment/confirm": lambda w: (
        "/v1/totp/enrolment/confirm",
        {"json": {"ticket": "x" * 43, "code": "123456"}},
        None,
    ),
    "POST /v1/introspect": lambda w: ("/v1/introspect", {"data": {"token": "not-a-refresh-token"}}, None),
    "GET /v1/me": lambda w: ("/v1/me", {}, None),
    "POST /v1/organisations": lambda w: ("/v1/organisations", {"json": _organisation_body(w)}, None),
    "GET /v1/organisations/{A}": lambda w: (f"/v1/organisations/{w.org['A']}", {}, w.org["A"]),
    "GET /v1/organisations?q=a": lambda w: ("/v1/organisations", {"params": {"q": "a"}}, None),
    "PATCH /v1/organisations/{A}": lambda w: (
        f"/v1/organisations/{w.org['A']}",
        {"json": {"kind": "ccas"}},
        None,
    ),
    "POST /v1/organisations/{A}/restore-delegation": lambda w: (
        f"/v1/organisations/{w.org['A']}/restore-delegation",
        {},
        None,
    ),
    "POST /v1/organisations/{A}/withdraw-delegation": lambda w: (
        f"/v1/organisations/{w.org['A']}/withdraw-delegation",
        {},
        None,
    ),
    "POST /v1/users": lambda w: ("/v1/users", {"json": _staff_body(w)}, None),
    "POST /v1/users/{user}/suspend": lambda w: (
        f"/v1/users/{w.target_user}/suspend",
        {"json": {"reason": "matrix"}},
        None,
    ),
    "GET /v1/users?id={user}": lambda w: ("/v1/users", {"params": {"id": w.target_user}}, w.target_user),
    "POST /v1/users/{user}/resend-activation": lambda w: (
        f"/v1/users/{w.target_user}/resend-activation",
        {},
        None,
    ),
    "POST /v1/users/{user}/reinstate": lambda w: (f"/v1/users/{w.target_user}/reinstate", {}, None),
    "POST /v1/users/{user}/unlock": lambda w: (f"/v1/users/{w.target_user}/unlock", {}, None),
    "POST /v1/users/{user}/force-password-reset": lambda w: (
        f"/v1/users/{w.target_user}/force-password-reset",
        {},
        None,
    ),
    "GET /v1/grants": lambda w: ("/v1/grants", {}, w.grant_listed),
    "GET /v1/grants?department=76": lambda w: (
        "/v1/grants",
        {"params": {"department": "76"}},
        w.grant_listed,
    ),
    "POST /v1/grants/{grant}/revoke": lambda w: (f"/v1/grants/{w.grant_revoked}/revoke", {}, None),
    "POST /v1/clients": lambda w: (
        "/v1/clients",
        {"json": {"grant_id": w.grant_for_client, "name": "SI matrice"}},
        None,
    ),
    "GET /v1/clients?organisation={A}": lambda w: (
        "/v1/clients",
        {"params": {"organisation": w.org["A"]}},
        w.client,
    ),
    "POST /v1/clients/{client}/rotate": lambda w: (f"/v1/clients/{w.client}/rotate", {}, None),
    "POST /v1/clients/{client}/disable": lambda w: (f"/v1/clients/{w.client}/disable", {}, None),
    "DELETE /v1/clients/{client}": lambda w: (f"/v1/clients/{w.next_deletable()}", {}, None),
}


async def make_world(idp: Identity) -> World:
    today = date.today()
    async with idp.app.state.sessions() as s, s.begin():
        orgs = {
            side: Organisation(
                siret=siret(100 + i),
                name=f"Organisation {side}",
                kind="bailleur",
                department=DEPARTMENT[side],
                convention_reference=f"CONV-{side}",
                convention_valid_until=today + timedelta(days=900),
            )
            for i, side in enumerate("AB")
        }
        s.add_all(orgs.values())
        await s.flush()
        callers: dict[str, str] = {}
        for column, who in WHO.items():
            if not who.person:
                continue
            partner = who.roles[0].startswith("partner")
            user = User(
                email=unique_email(column.strip("~")),
                family_name="Matrice",
                given_name=column,
                roles=list(who.roles),
                organisation_id=orgs[who.side].id if partner else None,
                department=DEPARTMENT[who.side],
                status="active",
            )
            s.add(user)
            await s.flush()
            callers[column] = user.id
        target = User(
            email=unique_email("target"),
            family_name="Cible",
            given_name="Paul",
            roles=["partner_user"],
            organisation_id=orgs["A"].id,
            department="76",
            status="active",
        )
        s.add(target)
        await s.flush()
        grants = [
            Grant(
                user_id=target.id,
                organisation_id=orgs["A"].id,
                profile="T2",
                department="76",
                valid_from=today,
                valid_until=today + timedelta(days=100),
            )
            for _ in range(3)
        ]
        s.add_all(grants)
        # Partner systems are real clients (identity refuses a client it does not know), each bound to a
        # grant of its side's partner user, so that no row acting on the target touches them.
        own = {
            side: Grant(
                user_id=callers[column],
                organisation_id=orgs[side].id,
                profile="T3",
                department=DEPARTMENT[side],
                valid_from=today,
                valid_until=today + timedelta(days=100),
            )
            for side, column in (("A", "user"), ("B", "user~"))
        }
        s.add_all(own.values())
        await s.flush()
        for column, who in WHO.items():
            if not who.person:
                callers[column] = _client(s, own[who.side], f"cdap-matrix-{column}")
        managed = _client(s, grants[2], "cdap-matrix-managed")
        deletable = [_client(s, grants[2], f"cdap-matrix-delete-{i}") for i in range(len(PRINCIPALS))]
        return World(
            idp,
            {side: o.id for side, o in orgs.items()},
            target.id,
            grants[0].id,
            grants[1].id,
            grants[2].id,
            callers,
            managed,
            deletable,
        )


def _client(s: Any, grant: Grant, client_id: str) -> str:
    s.add(
        Client(
            id=f"{client_id}-{grant.id[-6:]}",
            secret_digest="0" * 64,
            name=client_id,
            organisation_id=grant.organisation_id,
            grant_id=grant.id,
            created_by="matrix",
        )
    )
    return f"{client_id}-{grant.id[-6:]}"


# Everything a refused call must leave as it was, read in one round trip (it is read twice per refusal, and
# most cells are refusals). Outbox and mail queue by their highest id: housekeeping may purge what was sent, but a new
# row always gets a higher id.
SNAPSHOT = text(
    """
    SELECT concat_ws(' | ',
      (SELECT string_agg(concat_ws(',', id, status, must_reset_password, permanently_locked, locked_until,
                                   password_hash), ';' ORDER BY id) FROM user_account),
      (SELECT string_agg(concat_ws(',', id, delegation_withdrawn), ';' ORDER BY id) FROM organisation),
      (SELECT string_agg(concat_ws(',', id, status), ';' ORDER BY id) FROM grant_habilitation),
      (SELECT string_agg(concat_ws(',', id, disabled, secret_digest), ';' ORDER BY id) FROM client),
      (SELECT string_agg(concat_ws(',', digest, used_at), ';' ORDER BY digest) FROM one_time_token),
      (SELECT string_agg(concat_ws(',', digest, used_at, revoked), ';' ORDER BY digest) FROM refresh_token),
      (SELECT max(id) FROM outbox),
      (SELECT max(id) FROM mail_outbox))
    """
)


async def snapshot(idp: Identity) -> str:
    async with idp.app.state.sessions() as s:
        return str((await s.execute(SNAPSHOT)).scalar_one())


async def test_the_matrix(idp: Identity) -> None:
    """Every row x every column; all mismatches are reported together, as (row, column, what happened)."""
    w = await make_world(idp)

    def send(method: str, path: str, column: str, kwargs: dict[str, Any]) -> Awaitable[Response]:
        return idp.client.request(method, path, headers=w.headers(column), **kwargs)

    wrong = await table_mismatches(MATRIX, PRINCIPALS, lambda row: CALLS[row](w), send, lambda: snapshot(idp))
    assert not wrong, "cells that differ from the table:\n" + "\n".join(map(repr, wrong))


def test_every_endpoint_has_a_row() -> None:
    assert_complete(build().openapi(), MATRIX, CALLS, PRINCIPALS, WHO)
