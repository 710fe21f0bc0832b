"""The authorization matrix of dossiers: every endpoint x every role, with a habilitation inside or
outside the dossier's department, as one explicit table.

Here a habilitation (a grant named by the token and still active in this service's projection) decides,
not a role: a CAF instructor, manager, admin or auditor holds none, and neither does a partner
administrator unless one was asked for them, so each is refused like any caller without a grant in the
dossier's department. Columns: `user` and `sys` (a person, a partner system) hold a T1 grant in 76, the
dossier's department; `~` holds the same grant in 27.

A cell is the status the call must get: 401 without a token (nothing recorded), otherwise the answer, and
every answer is recorded before it leaves: exactly one consultation event whose id is `X-Audit-Id`,
`granted` for a 200, `denied` for a 403 (problem+json, and no dossier data in it). `HID` is a 200 that
must not show the dossier (a search inside the caller's own department only).

`test_every_endpoint_has_a_row` reads the app's OpenAPI document: a new /v1 endpoint fails it until its
row is written here, so nobody adds an endpoint without deciding who may call it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from cdap_cli.caf_feed import make_dossier
from cdap_dossiers import handlers
from cdap_dossiers.app import build
from cdap_dossiers.models import Dossier
from cdap_shared import events as ev
from cdap_shared.outbox import OutboxRecord
from cdap_testing.matrix import assert_complete

from .conftest import LANDLORD, POOLS, Service

pytestmark = pytest.mark.stack

HID = "200, without the other department's dossier"
Expect = int | str
NUMERO = "1000001"

# fmt: off
PRINCIPALS = ("anon", "user", "user~", "padm", "sys", "sys~", "ins", "mgr", "adm", "aud")

MATRIX: dict[str, tuple[Expect, ...]] = {
    #                                anon  user  user~ padm  sys   sys~  ins   mgr   adm   aud
    "GET /v1/dossiers/{numero}":    (401,  200,  403,  403,  200,  403,  403,  403,  403,  403),
    "POST /v1/dossiers/search":     (401,  200,  HID,  403,  200,  HID,  403,  403,  403,  403),
    "GET /v1/dossiers/policy":      (401,  200,  200,  200,  200,  200,  200,  200,  200,  200),
}
# Rows that read no dossier: answered to any signed-in caller, and nothing is recorded.
NOT_CONSULTATIONS = {"GET /v1/dossiers/policy"}
# fmt: on

# column -> (sub, roles, department of its T1 grant or None)
WHO: dict[str, tuple[str, list[str], str | None]] = {
    "user": ("partner-user-76", ["partner_user"], "76"),
    "user~": ("partner-user-27", ["partner_user"], "27"),
    "padm": ("partner-admin-76", ["partner_admin"], None),
    "sys": ("cdap-client-76", ["partner_system"], "76"),
    "sys~": ("cdap-client-27", ["partner_system"], "27"),
    "ins": ("instructor-76", ["caf_instructor"], None),
    "mgr": ("manager-76", ["caf_manager"], None),
    "adm": ("caf-admin-76", ["caf_admin"], None),
    "aud": ("auditor-76", ["auditor"], None),
}


@dataclass
class World:
    svc: Service
    nir: str
    family_name: str

    def headers(self, column: str) -> dict[str, str]:
        if column == "anon":
            return {}
        sub, roles, department = WHO[column]
        grants = [{"id": f"g-{sub}", "profile": "T1", "department": department}] if department else []
        extra = {} if roles == ["partner_system"] else {"department": "76"}
        token = self.svc.minter.mint(sub, roles=roles, grants=grants, org=f"org-{LANDLORD}", **extra)
        return {"Authorization": f"Bearer {token}"}


# How each row is called: (path, keyword arguments for httpx).
CALLS: dict[str, Callable[[World], tuple[str, dict[str, Any]]]] = {
    "GET /v1/dossiers/{numero}": lambda w: (
        f"/v1/dossiers/{NUMERO}",
        {"params": {"motif": "accompagnement_social"}},
    ),
    "POST /v1/dossiers/search": lambda w: (
        "/v1/dossiers/search",
        {"json": {"motif": "accompagnement_social", "nir": w.nir}},
    ),
    "GET /v1/dossiers/policy": lambda w: ("/v1/dossiers/policy", {}),
}


async def make_world(svc: Service) -> World:
    """The dossier (department 76, no opposition) and the grants, fed straight to the projections."""
    today = date.today()
    dossier = make_dossier(random.Random(11), POOLS, NUMERO, "76").model_copy(update={"opposition": False})
    events = [ev.make_event("caf.dossier.upserted", source="/test", subject=NUMERO, data=dossier)]
    for sub, _, department in WHO.values():
        if department:
            grant = ev.GrantIssued(
                grant_id=f"g-{sub}",
                user_id=sub,
                organisation_id=f"org-{LANDLORD}",
                organisation_siret=LANDLORD,
                profile="T1",
                department=department,
                valid_from=today - timedelta(days=1),
                valid_until=today + timedelta(days=100),
            )
            events.append(ev.make_event("identity.grant.issued", source="/test", subject=sub, data=grant))
    apply = handlers.handler(svc.settings)
    async with svc.app.state.sessions() as s, s.begin():
        for event in events:
            await apply(s, event)
    async with svc.app.state.sessions() as s:
        row = await s.get(Dossier, NUMERO)
        assert row is not None
        return World(svc, dossier.nir, row.family_name)


async def recorded_since(svc: Service, last: int) -> list[ev.CloudEvent]:
    async with svc.app.state.sessions() as s:
        query = select(OutboxRecord).where(col(OutboxRecord.id) > last).order_by(col(OutboxRecord.id))
        rows = (await s.execute(query)).scalars()
        return [ev.CloudEvent.from_bytes(r.payload) for r in rows]


async def newest(svc: Service) -> int:
    async with svc.app.state.sessions() as s:
        return int((await s.execute(select(func.max(col(OutboxRecord.id))))).scalar() or 0)


async def test_the_matrix(service_factory: Callable[..., Any]) -> None:
    """Every row x every column; all mismatches are reported together, as (row, column, what happened)."""
    svc: Service = await service_factory()
    w = await make_world(svc)
    wrong: list[tuple[str, str, Any, str]] = []
    for row, expected in MATRIX.items():
        method = row.split(" ", 1)[0]
        for column, want in zip(PRINCIPALS, expected, strict=True):
            path, kwargs = CALLS[row](w)
            last = await newest(svc)
            r = await svc.client.request(method, path, headers=w.headers(column), **kwargs)
            status = r.status_code
            problem = r.headers.get("content-type") == "application/problem+json"
            events = await recorded_since(svc, last)
            if want == HID:
                if status != 200 or NUMERO in r.text:
                    wrong.append((row, column, status, f"shows {NUMERO}: {r.text[:80]}"))
            elif status != want:
                wrong.append((row, column, status, r.text[:120]))
            elif want in (401, 403) and not (problem and r.json().get("status") == want):
                wrong.append((row, column, status, f"not problem+json: {r.headers.get('content-type')}"))
            elif want == 403 and (w.nir in r.text or w.family_name in r.text):
                wrong.append((row, column, status, "dossier data in a refusal"))
            elif row in NOT_CONSULTATIONS:
                if status == 200 and "accompagnement_social" not in r.json()["profiles"]["T1"]["motifs"]:
                    wrong.append((row, column, status, f"not the policy: {r.text[:80]}"))
                if events:
                    wrong.append((row, column, status, f"recorded {len(events)} events for no dossier"))
                continue
            elif want == 200 and NUMERO not in r.text:
                wrong.append((row, column, status, f"does not show {NUMERO}"))
            if status == 401:
                if events:
                    wrong.append((row, column, status, f"recorded {len(events)} events without a caller"))
                continue
            decision = "granted" if status == 200 else "denied"
            if [(e.id, e.data["decision"]) for e in events] != [(r.headers.get("X-Audit-Id"), decision)]:
                wrong.append(
                    (row, column, status, f"recorded {[(e.type, e.data['decision']) for e in events]}")
                )
    assert not wrong, "cells that differ from the table:\n" + "\n".join(map(repr, wrong))


def test_every_endpoint_has_a_row() -> None:
    assert_complete(build().openapi(), MATRIX, CALLS, PRINCIPALS, WHO)
