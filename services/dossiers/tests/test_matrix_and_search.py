"""Through HTTP: the policy matrix, each lookup recorded exactly once; search stays inside the scope."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from cdap_dossiers.policy import load_policy

from .conftest import LANDLORD, OTHER_LANDLORD, RSA_BODY, Service
from .test_policy_and_domain import expected_reason

pytestmark = pytest.mark.stack
POLICY = load_policy()


async def test_every_profile_scope_opposition_and_motif_over_http(
    service_factory: Callable[..., Awaitable[Service]],
) -> None:
    svc = await service_factory(rate_limit_user=1000)
    cases = list(
        itertools.product(sorted(POLICY.profiles), [True, False], [True, False], [True, False], [True, False])
    )
    siret = {"T2": LANDLORD, "T5": RSA_BODY}
    grants = {p: await svc.grant(f"user-{p}", p, siret=siret.get(p, LANDLORD)) for p in POLICY.profiles}
    numeros = {}
    for i, (profile, in_dept, in_caseload, opposition, _) in enumerate(cases):
        numero = f"{2_000_000 + i:07d}"
        numeros[i] = numero
        caseload_siret = siret.get(profile, LANDLORD) if in_caseload else OTHER_LANDLORD
        await svc.add_dossier(
            numero,
            department="76" if in_dept else "27",
            opposition=opposition,
            landlord_siret=caseload_siret,
            rsa_referent_siret=caseload_siret,
        )
    await svc.wait_for_dossiers(len(cases))
    await svc.wait_for_grants(len(grants))

    for i, (profile, in_dept, in_caseload, opposition, motif_ok) in enumerate(cases):
        p = POLICY.profiles[profile]
        params = {"motif": p.motifs[0] if motif_ok else "curiosite"}
        if p.scope == "match":
            async with svc.app.state.sessions() as s:
                from cdap_dossiers.models import Dossier

                dossier = await s.get(Dossier, numeros[i])
                assert dossier is not None
            params["family_name"] = dossier.family_name if in_caseload else "Personne"
        before = len(await svc.outbox())
        r = await svc.client.get(
            f"/v1/dossiers/{numeros[i]}",
            params=params,
            headers=svc.token(f"user-{profile}", [grants[profile]]),
        )
        reason = expected_reason(
            profile, in_dept, in_caseload or p.scope == "department", opposition, motif_ok
        )
        recorded = await svc.outbox()
        assert len(recorded) == before + 1, (profile, in_dept, in_caseload, opposition, motif_ok)
        event = recorded[-1]
        assert event.id == r.headers["X-Audit-Id"]
        if reason is None:
            assert r.status_code == 200, (profile, in_dept, in_caseload, opposition, motif_ok, r.text)
            assert set(r.json()["sections"]) <= set(p.sections)
            assert event.data["decision"] == "granted" and event.data["profile"] == profile
        else:
            assert r.status_code == 403 and r.json()["reason"] == reason, (
                profile,
                in_dept,
                in_caseload,
                r.text,
            )
            assert event.data["decision"] == "denied" and event.data["reason"] == reason


async def test_search_finds_only_inside_the_scope_and_records_no_identifier(
    service_factory: Callable[..., Awaitable[Service]],
) -> None:
    svc = await service_factory(search_rate_limit_user=1000)
    mine = await svc.add_dossier("3000001", opposition=False, landlord_siret=LANDLORD)
    other_dept = await svc.add_dossier("3000002", department="27", opposition=False, landlord_siret=LANDLORD)
    objected = await svc.add_dossier("3000003", opposition=True, landlord_siret=LANDLORD)
    other_landlord = await svc.add_dossier("3000004", opposition=False, landlord_siret=OTHER_LANDLORD)
    t1 = await svc.grant("sw", "T1")
    t2 = await svc.grant("landlord", "T2", siret=LANDLORD)
    t3 = await svc.grant("holidays", "T3")
    await svc.wait_for_dossiers(4)
    await svc.wait_for_grants(3)

    async def search(user: str, grant: dict[str, str], body: dict[str, object]) -> list[str]:
        r = await svc.client.post("/v1/dossiers/search", json=body, headers=svc.token(user, [grant]))
        assert r.status_code == 200, r.text
        assert r.headers["X-Audit-Id"]
        return [m["numero"] for m in r.json()["items"]]

    assert await search("sw", t1, {"motif": "accompagnement_social", "nir": mine.nir}) == ["3000001"]
    assert await search("sw", t1, {"motif": "accompagnement_social", "nir": other_dept.nir}) == []
    assert await search("sw", t1, {"motif": "accompagnement_social", "nir": objected.nir}) == []
    phone = mine.sections["contact"]["telephone"]
    assert await search(
        "sw", t1, {"motif": "verification_droits", "telephone": "+33" + phone.replace(" ", "")[1:]}
    ) == ["3000001"]
    identite = mine.sections["identite"]
    by_name = {
        "motif": "accompagnement_social",
        "family_name": identite["family_name"].upper(),
        "birth_date": identite["birth_date"],
    }
    assert "3000001" in await search("sw", t1, by_name)
    # Namesakes are told apart by birth date and commune, shown with each match.
    r = await svc.client.post("/v1/dossiers/search", json=by_name, headers=svc.token("sw", [t1]))
    [hit] = [m for m in r.json()["items"] if m["numero"] == "3000001"]
    assert hit["birth_date"] == identite["birth_date"] and hit["commune"] == mine.sections["adresse"]["city"]
    assert await search("landlord", t2, {"motif": "gestion_aide_logement", "nir": other_landlord.nir}) == []
    assert await search("landlord", t2, {"motif": "gestion_aide_logement", "nir": mine.nir}) == ["3000001"]

    refused = await svc.client.post(
        "/v1/dossiers/search",
        json={"motif": "tarification_vacances", "nir": mine.nir},
        headers=svc.token("holidays", [t3]),
    )
    assert refused.status_code == 403 and refused.json()["reason"] == "motif_not_allowed"

    searched = [e for e in await svc.outbox() if e.type == "dossier.searched"]
    assert len(searched) == 9
    for event in searched:
        text = event.to_bytes().decode()
        assert mine.nir not in text and phone.replace(" ", "") not in text
    assert searched[0].data["criteria"] == ["nir"] and searched[0].data["numeros"] == ["3000001"]


async def test_searches_are_rate_limited_and_each_refusal_is_recorded(
    service_factory: Callable[..., Awaitable[Service]],
) -> None:
    svc = await service_factory(search_rate_limit_user=2)
    grant = await svc.grant("sw", "T1")
    await svc.wait_for_grants(1)
    answers = await asyncio.gather(  # together: well within two one-second windows, 4 answered at most
        *(
            svc.client.post(
                "/v1/dossiers/search",
                json={"motif": "accompagnement_social", "nir": "185057800608491"},
                headers=svc.token("sw", [grant]),
            )
            for _ in range(12)
        )
    )
    statuses = [a.status_code for a in answers]
    assert 429 in statuses and 1 <= statuses.count(200) <= 4, statuses
    r = next(a for a in answers if a.status_code == 429)
    assert r.json()["reason"] == "rate_limited" and r.headers["Retry-After"] == "1"
    assert r.headers["RateLimit-Policy"] == '"search";q=2;w=1'
    assert r.headers["RateLimit"] == '"search";r=0;t=1'
    searched = [e for e in await svc.outbox() if e.type == "dossier.searched"]
    assert [e.data["decision"] for e in searched].count("rate_limited") == statuses.count(429)
    refused = next(e for e in searched if e.id == r.headers["X-Audit-Id"])
    assert refused.data["decision"] == "rate_limited" and refused.data["numeros"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"motif": "accompagnement_social"},
        {"motif": "accompagnement_social", "nir": "12345"},
        {"motif": "accompagnement_social", "nir": "185057800608436"},  # well formed, wrong key
        {"motif": "accompagnement_social", "birth_date": "1980-01-01"},
        {"motif": "accompagnement_social", "telephone": "call me"},
        {"motif": "accompagnement_social", "nir": "185057800608491", "extra": 1},
        {"motif": "BAD MOTIF", "nir": "185057800608491"},
    ],
)
async def test_bad_searches_are_422_and_record_nothing(
    service_factory: Callable[..., Awaitable[Service]], body: dict[str, object]
) -> None:
    svc = await service_factory()
    r = await svc.client.post("/v1/dossiers/search", json=body, headers=svc.token("sw", []))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert await svc.outbox() == []
