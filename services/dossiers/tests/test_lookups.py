"""Lookups against the running service: filtered, recorded before answered, denied with a reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text

from cdap_dossiers import lookups, ratelimit
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.topics import named
from cdap_testing import eventually

from .conftest import LANDLORD, OTHER_LANDLORD, Service

pytestmark = pytest.mark.stack

T1_SECTIONS = [
    "adresse",
    "contact",
    "droits",
    "foyer",
    "identite",
    "logement",
    "paiements",
    "quotient_familial",
    "ressources",
]


@pytest.fixture
async def svc(service_factory: Callable[..., Awaitable[Service]]) -> Service:
    return await service_factory()


async def test_a_granted_lookup_returns_only_the_profile_sections_and_is_recorded_first(svc: Service) -> None:
    dossier = await svc.add_dossier("1000001", opposition=False)
    grant = await svc.grant("alice", "T1")
    await svc.wait_for_dossiers(1)
    await svc.wait_for_grants(1)

    r = await svc.client.get(
        "/v1/dossiers/1000001", params={"motif": "accompagnement_social"}, headers=svc.token("alice", [grant])
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["numero"] == "1000001" and body["department"] == "76"
    assert body["policy_version"] == "2026.11-1"
    assert sorted(body["sections"]) == T1_SECTIONS
    assert body["sections"]["identite"] == dossier.sections["identite"]
    assert "rsa" not in body["sections"] and dossier.nir not in r.text

    [consulted] = await svc.outbox()
    assert r.headers["X-Audit-Id"] == consulted.id
    data = ev.parse_data(consulted)
    assert isinstance(data, ev.DossierConsulted)
    assert (data.actor, data.decision, data.motif, data.grant_id, data.profile) == (
        "alice",
        "granted",
        "accompagnement_social",
        grant["id"],
        "T1",
    )
    assert data.sections == T1_SECTIONS and data.policy_version == "2026.11-1"


@pytest.mark.parametrize(
    ("profile", "numero_setup", "params", "reason"),
    [
        ("T1", {"department": "27"}, {"motif": "accompagnement_social"}, "no_grant_for_department"),
        ("T1", {"opposition": True}, {"motif": "accompagnement_social"}, "opposition"),
        ("T1", {}, {"motif": "tarification_vacances"}, "motif_not_allowed"),
        ("T2", {"landlord_siret": OTHER_LANDLORD}, {"motif": "gestion_aide_logement"}, "outside_caseload"),
        ("T3", {}, {"motif": "tarification_vacances", "family_name": "Personne"}, "identity_mismatch"),
    ],
)
async def test_denials_are_403_with_a_reason_and_recorded(
    svc: Service, profile: str, numero_setup: dict[str, object], params: dict[str, str], reason: str
) -> None:
    await svc.add_dossier("1000002", **{"opposition": False, **numero_setup})
    grant = await svc.grant("bob", profile)
    await svc.wait_for_dossiers(1)
    await svc.wait_for_grants(1)
    r = await svc.client.get("/v1/dossiers/1000002", params=params, headers=svc.token("bob", [grant]))
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == reason and "sections" not in r.json()
    [consulted] = await svc.outbox()
    assert consulted.id == r.headers["X-Audit-Id"]
    assert consulted.data["decision"] == "denied" and consulted.data["reason"] == reason
    assert consulted.data["sections"] == []


async def test_unknown_numero_is_404_and_recorded(svc: Service) -> None:
    grant = await svc.grant("carol", "T1")
    await svc.wait_for_grants(1)
    r = await svc.client.get(
        "/v1/dossiers/9999999", params={"motif": "accompagnement_social"}, headers=svc.token("carol", [grant])
    )
    assert r.status_code == 404
    [consulted] = await svc.outbox()
    assert consulted.data["decision"] == "not_found" and consulted.id == r.headers["X-Audit-Id"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/dossiers/123", {"motif": "accompagnement_social"}),
        ("/v1/dossiers/12345678", {"motif": "accompagnement_social"}),
        ("/v1/dossiers/1000003", {}),
        ("/v1/dossiers/1000003", {"motif": "DROP TABLE dossier;--"}),
        ("/v1/dossiers/1000003", {"motif": "accompagnement_social", "family_name": "x" * 500}),
    ],
)
async def test_bad_input_is_a_4xx_that_records_nothing(
    svc: Service, path: str, params: dict[str, str]
) -> None:
    grant = await svc.grant("dan", "T1")
    await svc.wait_for_grants(1)
    r = await svc.client.get(path, params=params, headers=svc.token("dan", [grant]))
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == "application/problem+json"
    assert await svc.outbox() == []


async def test_no_token_or_a_forged_one_is_401(svc: Service) -> None:
    from cdap_testing import TokenMinter

    r = await svc.client.get("/v1/dossiers/1000001", params={"motif": "accompagnement_social"})
    assert r.status_code == 401
    forged = TokenMinter(kid=svc.minter.kid).mint(
        "eve", grants=[{"id": "g", "profile": "T1", "department": "76"}]
    )
    r = await svc.client.get(
        "/v1/dossiers/1000001",
        params={"motif": "accompagnement_social"},
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert r.status_code == 401


@pytest.mark.parametrize("end", ["identity.grant.revoked", "identity.user.suspended"])
async def test_revocation_or_suspension_denies_within_two_seconds(svc: Service, end: str) -> None:
    await svc.add_dossier("1000004", opposition=False)
    grant = await svc.grant("frank", "T1")
    await svc.wait_for_dossiers(1)
    await svc.wait_for_grants(1)
    headers = svc.token("frank", [grant])  # still valid for 5 minutes
    params = {"motif": "accompagnement_social"}
    assert (await svc.client.get("/v1/dossiers/1000004", params=params, headers=headers)).status_code == 200

    started = time.monotonic()
    if end == "identity.grant.revoked":
        await svc.publish(end, "frank", ev.GrantEnded(grant_id=grant["id"], user_id="frank", by="admin"))
        expected = "no_grant_for_department"
    else:
        await svc.publish(end, "frank", ev.UserRef(user_id="frank", by="admin", reason="alert"))
        expected = "suspended"

    async def denied() -> bool:
        r = await svc.client.get("/v1/dossiers/1000004", params=params, headers=headers)
        return r.status_code == 403 and r.json()["reason"] == expected

    await eventually(denied, within=2.0, interval=0.05)
    assert time.monotonic() - started < 2.0


async def test_rate_limit_answers_429_with_headers_and_records_it(
    service_factory: Callable[..., Awaitable[Service]],
) -> None:
    svc = await service_factory(rate_limit_user=3)
    await svc.add_dossier("1000005", opposition=False)
    grant = await svc.grant("gina", "T1")
    await svc.wait_for_dossiers(1)
    await svc.wait_for_grants(1)
    headers = svc.token("gina", [grant])
    statuses = []
    for _ in range(10):  # within two one-second windows at most: 6 answered at most
        r = await svc.client.get(
            "/v1/dossiers/1000005", params={"motif": "accompagnement_social"}, headers=headers
        )
        statuses.append(r.status_code)
    assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429 and statuses.count(200) <= 6
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.headers["RateLimit-Policy"] == '"lookup";q=3;w=1'
    assert r.headers["RateLimit"] == '"lookup";r=0;t=1'
    decisions = [c.data["decision"] for c in await svc.outbox()]
    assert decisions.count("rate_limited") == statuses.count(429)
    assert len(decisions) == 10


async def test_caseload_profiles_see_their_own_dossiers(svc: Service) -> None:
    await svc.add_dossier("1000006", opposition=False, landlord_siret=LANDLORD)
    grant = await svc.grant("hugo", "T2", siret=LANDLORD)
    await svc.wait_for_dossiers(1)
    await svc.wait_for_grants(1)
    r = await svc.client.get(
        "/v1/dossiers/1000006", params={"motif": "gestion_aide_logement"}, headers=svc.token("hugo", [grant])
    )
    assert r.status_code == 200 and sorted(r.json()["sections"]) == ["adresse", "identite", "logement"]


async def test_out_of_order_and_duplicate_upserts_keep_the_newest_version(svc: Service) -> None:
    v1 = await svc.add_dossier("1000007", opposition=False)
    v3 = v1.model_copy(
        update={
            "version": 3,
            "sections": {**v1.sections, "identite": {**v1.sections["identite"], "given_name": "Trois"}},
        }
    )
    v2 = v1.model_copy(
        update={
            "version": 2,
            "sections": {**v1.sections, "identite": {**v1.sections["identite"], "given_name": "Deux"}},
        }
    )
    await svc.publish("caf.dossier.upserted", "1000007", v3)
    await svc.publish("caf.dossier.upserted", "1000007", v2)
    await svc.publish("caf.dossier.upserted", "1000007", v1)
    grant = await svc.grant("ines", "T1")
    await svc.wait_for_grants(1)

    async def newest() -> bool:
        r = await svc.client.get(
            "/v1/dossiers/1000007",
            params={"motif": "accompagnement_social"},
            headers=svc.token("ines", [grant]),
        )
        return r.status_code == 200 and r.json()["sections"]["identite"]["given_name"] == "Trois"

    await eventually(newest, within=10)
    # Give the older upserts time to arrive after it: they must not win.
    await eventually(lambda: _consumed(svc), within=10)
    assert await newest()


async def _consumed(svc: Service) -> bool:
    from sqlalchemy import func, select

    from cdap_shared.inbox import InboxRecord

    async with svc.app.state.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(InboxRecord))).scalar_one()) >= 5


async def test_partner_systems_use_the_same_endpoint_with_their_own_limit(svc: Service) -> None:
    await svc.add_dossier("1000008", opposition=False, landlord_siret=LANDLORD)
    grant = await svc.grant("cdap-client-1", "T2", siret=LANDLORD)
    await svc.wait_for_dossiers(1)
    await svc.wait_for_grants(1)
    r = await svc.client.get(
        "/v1/dossiers/1000008",
        params={"motif": "gestion_aide_logement"},
        headers=svc.token("cdap-client-1", [grant], roles=["partner_system"]),
    )
    assert r.status_code == 200 and r.headers["RateLimit-Policy"] == '"lookup";q=50;w=1'
    [consulted] = await svc.outbox()
    assert consulted.data["actor"] == "cdap-client-1" and consulted.data["decision"] == "granted"


async def test_a_late_call_counts_in_the_newer_window_never_resets_it(svc: Service) -> None:
    """A call that read the clock just before a new second, then waited for the counter's lock while
    another replica's call opened that second, counts in the newer second rather than resetting it."""
    async with svc.app.state.sessions() as session, session.begin():
        await ratelimit.hit(session, "ines", "lookup")
        read = text("SELECT second FROM rate_window WHERE caller = 'ines'")
        first = (await session.execute(read)).scalar()
        # Another replica's calls, in a second that has begun meanwhile (here: one ahead of the clock).
        await session.execute(
            text("UPDATE rate_window SET second = second + 1, calls = 3 WHERE caller = 'ines'")
        )
        assert await ratelimit.hit(session, "ines", "lookup") == 4
        assert (await session.execute(read)).scalar() == first + 1  # the window did not go back


async def test_the_recorded_consultation_is_exactly_what_the_event_models_write(svc: Service) -> None:
    """The lookup serialises its event from a template (`lookups._consultation`): byte for byte the
    envelope and `DossierConsulted` the models would write, with its trace in the record's headers."""
    await svc.add_dossier("1000030", opposition=False)
    grant = await svc.grant("rose", "T1")
    await svc.wait_for_dossiers(1)
    await svc.wait_for_grants(1)
    params = {"motif": "accompagnement_social"}
    headers = svc.token("rose", [grant])
    assert (await svc.client.get("/v1/dossiers/1000030", params=params, headers=headers)).status_code == 200
    assert (await svc.client.get("/v1/dossiers/1000099", params=params, headers=headers)).status_code == 404

    async with svc.app.state.sessions() as s:
        rows = (
            await s.execute(text("SELECT event_type, topic, key, payload, headers FROM outbox ORDER BY id"))
        ).all()
    assert len(rows) == 2
    for event_type, topic, key, payload, record_headers in rows:
        event = ev.CloudEvent.from_bytes(payload)
        data = ev.parse_data(event)
        rebuilt = event.model_copy(update={"data": data.model_dump(mode="json")})
        assert rebuilt.to_bytes() == payload
        assert (event_type, topic, key) == (
            "dossier.consulted",
            named("dossier.consultations"),
            event.subject,
        )
        assert isinstance(data, ev.DossierConsulted) and data.trace_id
        assert record_headers["content-type"] == "application/cloudevents+json"
        assert record_headers["traceparent"].split("-")[1] == data.trace_id


async def test_once_ready_every_lookup_connection_holds_its_statements_and_the_warm_up_recorded_nothing(
    svc: Service,
) -> None:
    async def ready() -> bool:
        return (await svc.client.get("/ready")).status_code == 200

    await eventually(ready)
    pool = svc.app.state.ctx.lookups.pool
    statements: list[set[str]] = []

    async def held() -> None:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT statement FROM pg_prepared_statements")
            statements.append({row["statement"] for row in rows})
            await asyncio.sleep(0.2)  # held, so that each of the others takes another connection

    await asyncio.gather(*(held() for _ in range(svc.settings.db_pool_size)))
    assert len(statements) == svc.settings.db_pool_size
    for prepared in statements:
        assert lookups._LOOKUP in prepared
    async with svc.app.state.ctx.lookups.records.pool.acquire() as conn:
        rows = await conn.fetch("SELECT statement FROM pg_prepared_statements")
        assert outbox.GROUP_APPEND_SQL in {row["statement"] for row in rows}
    async with svc.app.state.sessions() as s:
        assert (await s.execute(text("SELECT count(*) FROM outbox"))).scalar_one() == 0
        assert (await s.execute(text("SELECT count(*) FROM rate_window"))).scalar_one() == 0
