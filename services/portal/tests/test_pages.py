"""The pages against fake upstreams: what is shown comes from the APIs only, refusals read in French."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable

import httpx
import jwt
import pytest

from cdap_portal import texts
from cdap_portal.outcomes import Outcome, Outcomes
from cdap_shared import standing

from .conftest import (
    AUDITOR,
    INSTRUCTOR,
    NEW_REQUEST,
    PARTNER_ADMIN,
    POLICY,
    T1_USER,
    T3_USER,
    PortalClient,
    csrf_of,
)

REQUEST_ID = "0196f3a0-0000-7000-8000-000000000001"
DOC_ID = "0196f3a0-0000-7000-8000-0000000000d0"


def view(sections: dict[str, object]) -> httpx.Response:
    body = {"numero": "1234567", "department": "76", "policy_version": "2026.11-1", "sections": sections}
    return httpx.Response(200, json=body, headers={"X-Audit-Id": "0196-audit-id"})


async def consult(portal: PortalClient, **data: str) -> httpx.Response:
    token = await portal.csrf("/dossiers")
    return await portal.client.post(
        "/dossiers/consultation", data={"csrf_token": token, **data}, follow_redirects=True
    )


async def test_the_lookup_form_offers_the_profile_motifs(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    page = (await portal.client.get("/dossiers")).text
    motifs = re.findall(r'<option value="([a-z_]+)"', page)
    assert set(motifs) >= {"accompagnement_social", "instruction_aide", "verification_droits"}
    assert "gestion_aide_logement" not in page and "tarification_vacances" not in page
    assert 'lang="fr"' in page and '<main id="contenu"' in page and 'for="f-numero"' in page
    assert "Rechercher un dossier" in page  # T1 may search
    assert "Nom de famille de l&#39;allocataire" not in page  # T1 never needs it


async def test_the_form_is_built_from_the_policy_dossiers_serves_read_once_with_the_persons_token(
    make_portal: Callable[..., PortalClient],
) -> None:
    portal = make_portal()
    portal.fakes.policy = None  # dossiers does not answer yet: the motif is typed, not chosen
    await portal.login(T1_USER)
    page = (await portal.client.get("/dossiers")).text
    assert 'name="motif" value=""' in page and "<optgroup" not in page
    portal.fakes.policy = {
        **POLICY,
        "profiles": {"T1": {**POLICY["profiles"]["T1"], "motifs": ["motif_nouveau"]}},
    }
    for _ in range(2):
        page = (await portal.client.get("/dossiers")).text
        assert set(re.findall(r'<option value="([a-z_]+)"', page)) == {"motif_nouveau"}
    (read,) = portal.fakes.policy_reads  # kept: the second page did not read it again
    assert (
        jwt.decode(
            read.headers["authorization"].removeprefix("Bearer "), options={"verify_signature": False}
        )["sub"]
        == T1_USER["sub"]
    )
    await portal.client.aclose()


async def test_only_the_sections_the_api_returned_are_shown(portal: PortalClient) -> None:
    await portal.login(T1_USER)  # T1's policy opens nine sections...
    portal.fakes.on(
        "dossiers",
        "GET",
        "/v1/dossiers/1234567",
        view(  # ...but the API returned two: only those may appear
            {
                "identite": {"family_name": "Martin", "given_name": "Léa", "birth_date": "1990-04-02"},
                "logement": {"status": "locataire", "rent": 1512.5, "landlord_siret": None},
                "droits": [{"prestation": "AF", "monthly_amount": 141.99, "from": "2024-01-01"}],
            }
        ),
    )
    r = await consult(portal, numero="1234567", motif="accompagnement_social")
    assert r.status_code == 200
    shown = re.findall(r'<section class="dossier-section" id="section-([a-z_]+)"', r.text)
    assert shown == ["identite", "droits", "logement"]
    for absent in ("Ressources", "Paiements", "Composition du foyer", "Quotient familial", "RSA"):
        assert f">{absent}</h2>" not in r.text
    assert "Martin" in r.text and "2 avril 1990" in r.text
    # Sums of money the French way, in a record and in a table: 1 234,56 € (narrow no-break spaces).
    amounts = re.findall(r'<(dd|td)><span class="cdap-amount">([^<]*)</span>', r.text)
    assert amounts == [("td", "141,99\u00a0€"), ("dd", "1\u202f512,50\u00a0€")]
    assert '<span class="reference" id="audit-id">0196-audit-id</span>' in r.text
    [call] = portal.fakes.made("dossiers")
    assert call.request.url.params["motif"] == "accompagnement_social"
    assert "family_name" not in call.request.url.params
    assert call.bearer and "traceparent" in call.request.headers
    # The page links to the trace viewer's page of the trace the lookup (and its audit entry) belongs to.
    link = re.search(
        r'<a class="reference" href="http://127.0.0.1:16686/trace/([0-9a-f]{32})" id="trace-id">', r.text
    )
    assert link and call.request.headers["traceparent"].split("-")[1] == link.group(1)


# A standing reason (account suspended...) ends the session instead (test_sessions covers it).
@pytest.mark.parametrize("reason", sorted(set(texts.DENIAL_REASONS) - standing.REASONS))
async def test_each_denial_reason_is_explained_in_french(portal: PortalClient, reason: str) -> None:
    await portal.login(T1_USER)
    status = {"unknown_numero": 404, "rate_limited": 429}.get(reason, 403)
    portal.fakes.on(
        "dossiers",
        "GET",
        "/v1/dossiers/7654321",
        httpx.Response(
            status,
            json={"type": "about:blank", "title": "Denied", "status": status, "reason": reason},
            headers={"X-Audit-Id": "denied-audit-id", "content-type": "application/problem+json"},
        ),
    )
    r = await consult(portal, numero="7654321", motif="verification_droits")
    assert r.status_code == status
    assert texts.DENIAL_REASONS[reason].replace("'", "&#39;") in r.text
    assert "Consultation refusée" in r.text and "denied-audit-id" in r.text
    assert "dossier-section" not in r.text
    assert "Denied" not in r.text  # the API's English title is not what people read


async def test_invalid_lookup_input_is_refused_before_any_call(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    r = await consult(portal, numero="12AB", motif="tarification_vacances")
    assert r.status_code == 400
    assert "Le numéro allocataire comporte 7 chiffres." in r.text
    assert "n&#39;est pas proposé pour votre profil" in r.text
    assert 'href="#f-numero"' in r.text and 'aria-describedby="h-numero e-numero"' in r.text
    assert portal.fakes.made("dossiers") == []


async def test_a_match_profile_must_give_the_family_name(portal: PortalClient) -> None:
    await portal.login(T3_USER)
    page = (await portal.client.get("/dossiers")).text
    assert "Nom de famille de l&#39;allocataire" in page and "Rechercher un dossier" not in page
    missing = await consult(portal, numero="1234567", motif="tarification_vacances")
    assert missing.status_code == 400 and "saisissez le nom de famille" in missing.text
    assert portal.fakes.made("dossiers") == []
    portal.fakes.on("dossiers", "GET", "/v1/dossiers/1234567", view({"identite": {"family_name": "Roux"}}))
    ok = await consult(portal, numero="1234567", motif="tarification_vacances", family_name="Roux")
    assert ok.status_code == 200
    assert portal.fakes.made("dossiers")[0].request.url.params["family_name"] == "Roux"


async def test_dossiers_unavailable_says_no_data_left(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    portal.fakes.on("dossiers", "GET", "/v1/dossiers/1234567", httpx.Response(503, json={"status": 503}))
    r = await consult(portal, numero="1234567", motif="accompagnement_social")
    assert r.status_code == 503 and "aucune donnée n&#39;a été communiquée" in r.text


async def test_search_lists_matches_with_a_consult_button(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    items = [
        {
            "numero": "1000001",
            "family_name": "Martin",
            "given_name": "Léa",
            "birth_date": "1990-04-02",
            "commune": "Rouen",
        },
        {
            "numero": "1000002",
            "family_name": "Martin",
            "given_name": "Léa",
            "birth_date": "1984-11-30",
            "commune": "Dieppe",
        },
    ]
    portal.fakes.on(
        "dossiers",
        "POST",
        "/v1/dossiers/search",
        httpx.Response(200, json={"items": items, "truncated": False}, headers={"X-Audit-Id": "s-1"}),
    )
    token = await portal.csrf("/dossiers")
    r = await portal.client.post(
        "/dossiers/recherche",
        data={"csrf_token": token, "motif": "accompagnement_social", "family_name": "Martin"},
        follow_redirects=True,
    )
    assert r.status_code == 200 and "Consulter le dossier 1000001" in r.text and "s-1" in r.text
    # Two namesakes are told apart by birth date and commune.
    assert (
        "2 avril 1990" in r.text and "Rouen" in r.text and "30 novembre 1984" in r.text and "Dieppe" in r.text
    )
    [call] = portal.fakes.made("dossiers")
    assert json.loads(call.request.content) == {"motif": "accompagnement_social", "family_name": "Martin"}


async def test_a_nir_with_a_wrong_key_is_refused_before_any_search(portal: PortalClient) -> None:
    """A mistyped NIR (its key does not match) is told to the user and costs no recorded search."""
    await portal.login(T1_USER)
    token = await portal.csrf("/dossiers")
    r = await portal.client.post(
        "/dossiers/recherche",
        data={"csrf_token": token, "motif": "accompagnement_social", "nir": "1 85 05 78 006 084 36"},
    )
    assert r.status_code == 400 and "vérifiez la clé" in r.text
    assert portal.fakes.made("dossiers") == []


async def test_refresh_and_back_never_record_a_second_consultation(portal: PortalClient) -> None:
    """POST-redirect-GET: the lookup answers a redirect to its result; reloading the result (or coming
    back to it) shows it again without asking the dossiers service, which records every call."""
    await portal.login(T1_USER)
    portal.fakes.on("dossiers", "GET", "/v1/dossiers/1234567", view({"identite": {"family_name": "Martin"}}))
    token = await portal.csrf("/dossiers")
    posted = await portal.client.post(
        "/dossiers/consultation",
        data={"csrf_token": token, "numero": "1234567", "motif": "accompagnement_social"},
    )
    assert posted.status_code == 303 and posted.headers["location"].startswith("/dossiers/resultat/")
    for _ in range(3):  # the redirect, then two reloads
        shown = await portal.client.get(posted.headers["location"])
        assert shown.status_code == 200 and "0196-audit-id" in shown.text and "Martin" in shown.text
    assert len(portal.fakes.made("dossiers")) == 1

    # An unknown or expired result (or another session's) says to look up again, and asks nothing.
    gone = await portal.client.get("/dossiers/resultat/unknown-key-123")
    assert gone.status_code == 404 and "refaites la consultation" in gone.text
    assert len(portal.fakes.made("dossiers")) == 1


def test_a_kept_result_is_shown_to_its_session_only_and_not_after_its_time() -> None:
    kept = Outcomes(ttl=60)
    key = kept.keep("session-a", Outcome("dossier", 200, {"audit_id": "x"}))
    assert kept.shown("session-a", key) == Outcome("dossier", 200, {"audit_id": "x"})
    assert kept.shown("session-b", key) is None
    expired = Outcomes(ttl=-1)
    assert expired.shown("session-a", expired.keep("session-a", Outcome("dossier", 200, {}))) is None


async def test_pages_of_another_role_are_403(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    for path in ("/instruction", "/demandes", "/audit", "/audit/alertes"):
        r = await portal.client.get(path)
        assert r.status_code == 403 and "pas accessible avec votre rôle" in r.text
    assert portal.fakes.calls == []


def detail(state: str = "submitted", **extra: object) -> dict[str, object]:
    return {
        "id": REQUEST_ID,
        "state": state,
        "stage": 1,
        "due": "2026-01-05",
        "overdue": True,
        "version": 3,
        "organisation_id": "org-1",
        "profile": "T1",
        "department": "76",
        "applicant": {"family_name": "Petit", "given_name": "Jules", "email": "j@x.fr", "job_title": "CESF"},
        "valid_until": "2027-01-01",
        "submitted_at": "2026-01-01T09:00:00+00:00",
        "justification": "Accompagnement des familles",
        "requested_documents": [],
        "documents": [],
        "history": [{"at": "2026-01-01T09:00:00+00:00", "actor": "padmin", "action": "submitted"}],
        **extra,
    }


async def test_the_queue_opens_on_what_awaits_the_viewer_with_a_count_and_days_left(
    portal: PortalClient,
) -> None:
    await portal.login(INSTRUCTOR)
    portal.fakes.on(
        "access",
        "GET",
        "/v1/access-requests",
        httpx.Response(
            200,
            json={
                "items": [
                    detail(
                        business_days_left=-3,
                        organisation_name="CCAS de Rouen",
                        organisation_siret="21760540100033",
                    )
                ],
                "next_cursor": "c2",
                "total": 7,
            },
        ),
    )
    r = await portal.client.get("/instruction", params={"q": "rouen"})
    assert r.status_code == 200
    assert "À traiter (7)" in r.text and "en retard de 3 jours ouvrés" in r.text
    assert '<tr class="overdue">' in r.text and "5 janvier 2026" in r.text
    assert "CCAS de Rouen" in r.text and "SIRET 217 605 401 00033" in r.text and "page=c2" in r.text
    [call] = portal.fakes.made("access")
    assert dict(call.request.url.params) == {"awaiting_me": "true", "q": "rouen"}
    assert portal.fakes.made("identity") == []  # the queue already named the organisation


async def test_every_request_of_the_department_by_state(portal: PortalClient) -> None:
    await portal.login(INSTRUCTOR)
    portal.fakes.on(
        "access", "GET", "/v1/access-requests", httpx.Response(200, json={"items": [detail()], "total": 1})
    )
    r = await portal.client.get("/instruction", params={"vue": "toutes", "etat": "submitted"})
    assert r.status_code == 200 and "À traiter (1)" in r.text
    listing, count = portal.fakes.made("access")
    assert dict(listing.request.url.params) == {"state": "submitted"}
    assert dict(count.request.url.params) == {"awaiting_me": "true", "limit": "1"}


async def test_the_queue_and_the_request_name_the_organisation(portal: PortalClient) -> None:
    await portal.login(INSTRUCTOR)
    other = detail(organisation_id="org-2", id="0196f3a0-0000-7000-8000-000000000002")
    portal.fakes.on(
        "access", "GET", "/v1/access-requests", httpx.Response(200, json={"items": [detail(), other]})
    )
    portal.fakes.on("access", "GET", f"/v1/access-requests/{REQUEST_ID}", httpx.Response(200, json=detail()))
    portal.fakes.on(
        "identity", "GET", "/v1/organisations/org-1", httpx.Response(200, json={"name": "CCAS de Rouen"})
    )
    # org-2 is another department's: identity refuses, the page falls back to its id.
    portal.fakes.on("identity", "GET", "/v1/organisations/org-2", httpx.Response(403, json={"status": 403}))
    queue = await portal.client.get("/instruction")
    assert queue.status_code == 200
    assert "<td>CCAS de Rouen</td>" in queue.text and '<span class="reference">org-2</span>' in queue.text
    page = await portal.client.get(f"/instruction/{REQUEST_ID}")
    assert '<dd id="organisation">CCAS de Rouen</dd>' in page.text


async def test_the_decision_forms_are_only_for_whoever_may_decide_and_history_names_people(
    portal: PortalClient,
) -> None:
    await portal.login(INSTRUCTOR)
    history = [
        {"at": "2026-01-01T09:00:00+00:00", "actor": "padmin", "action": "submitted"},
        {"at": "2026-01-02T13:05:00+00:00", "actor": "instr", "action": "stage_approved", "stage": 1},
        {"at": "2026-01-03T10:00:00+00:00", "actor": "identity", "action": "provisioned"},
    ]
    waiting = detail(state="awaiting_second_approval", stage=2, history=history)
    portal.fakes.on("access", "GET", f"/v1/access-requests/{REQUEST_ID}", httpx.Response(200, json=waiting))
    portal.fakes.on(
        "identity",
        "GET",
        "/v1/users",
        httpx.Response(200, json={"items": [{"id": "padmin", "display_name": "Claire Durand"}]}),
    )
    page = await portal.client.get(f"/instruction/{REQUEST_ID}")
    # Stage 2 is a manager's: the instructor gets no form, and is told who decides.
    assert "/decision" not in page.text and "attend la décision d&#39;un responsable" in page.text
    assert (
        "par Claire Durand" in page.text and "par vous" in page.text and "CDAP (automatiquement)" in page.text
    )
    assert "2 janvier 2026 à 14:05" in page.text  # Paris time, in words
    [names] = [c for c in portal.fakes.made("identity") if c.path == "/v1/users"]
    assert sorted(names.request.url.params.get_list("id")) == ["identity", "instr", "padmin"]


async def test_a_manager_gets_the_folded_second_stage_forms(portal: PortalClient) -> None:
    await portal.login({**INSTRUCTOR, "sub": "mgr", "roles": ["caf_manager"]})
    waiting = detail(state="awaiting_second_approval", stage=2)
    portal.fakes.on("access", "GET", f"/v1/access-requests/{REQUEST_ID}", httpx.Response(200, json=waiting))
    page = await portal.client.get(f"/instruction/{REQUEST_ID}")
    # Approve or reject (no documents at stage 2), each folded until opened.
    assert re.findall(r'<details class="decision" id="decide-([a-z_]+)">', page.text) == ["approve", "reject"]
    assert "Accorder (second niveau)" in page.text


async def test_a_decision_carries_the_version_read_and_an_idempotency_key(portal: PortalClient) -> None:
    await portal.login(INSTRUCTOR)
    portal.fakes.on("access", "GET", f"/v1/access-requests/{REQUEST_ID}", httpx.Response(200, json=detail()))
    portal.fakes.on(
        "access",
        "POST",
        f"/v1/access-requests/{REQUEST_ID}/decisions",
        httpx.Response(200, json={"id": REQUEST_ID, "state": "documents_requested", "version": 4}),
    )
    page = await portal.client.get(f"/instruction/{REQUEST_ID}")
    assert "Demander des pièces" in page.text and 'name="version" value="3"' in page.text
    key = re.search(r'name="idempotency_key" value="([^"]+-d)"', page.text)
    assert key
    asked = await portal.client.post(
        f"/instruction/{REQUEST_ID}/decision",
        data={
            "csrf_token": csrf_of(page.text),
            "decision": "request_documents",
            "version": "3",
            "idempotency_key": key.group(1),
            "documents": "Convention signée\n\nBulletin d'adhésion\n",
        },
    )
    # First the confirmation, saying what the decision will do; nothing sent yet.
    assert asked.status_code == 200 and "Ce que cette action va faire" in asked.text
    assert "Convention signée ; Bulletin d&#39;adhésion" in asked.text
    assert [c.method for c in portal.fakes.made("access")] == ["GET", "GET"]
    kept = {
        name: html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', asked.text)
    }
    assert kept["confirme"] == "oui"
    r = await portal.client.post(f"/instruction/{REQUEST_ID}/decision", data=kept)
    assert (
        r.status_code == 303 and r.headers["location"] == f"/instruction/{REQUEST_ID}?info=request_documents"
    )
    call = portal.fakes.made("access")[-1]
    assert json.loads(call.request.content) == {
        "decision": "request_documents",
        "documents": ["Convention signée", "Bulletin d'adhésion"],
    }
    assert call.request.headers["if-match"] == '"3"' and call.request.headers["idempotency-key"] == key.group(
        1
    )


async def test_a_refused_decision_is_explained_and_a_rejection_needs_a_reason(portal: PortalClient) -> None:
    await portal.login(INSTRUCTOR)
    portal.fakes.on("access", "GET", f"/v1/access-requests/{REQUEST_ID}", httpx.Response(200, json=detail()))
    token = await portal.csrf(f"/instruction/{REQUEST_ID}")
    empty = await portal.client.post(
        f"/instruction/{REQUEST_ID}/decision", data={"csrf_token": token, "decision": "reject"}
    )
    assert empty.status_code == 400 and "Un refus doit être motivé" in empty.text
    assert [c.method for c in portal.fakes.made("access")].count("POST") == 0
    portal.fakes.on(
        "access",
        "POST",
        f"/v1/access-requests/{REQUEST_ID}/decisions",
        httpx.Response(
            403, json={"status": 403, "reason": "own_organisation", "detail": "Nobody decides..."}
        ),
    )
    refused = await portal.client.post(
        f"/instruction/{REQUEST_ID}/decision",
        data={"csrf_token": token, "decision": "approve", "confirme": "oui"},
    )
    assert refused.status_code == 403
    assert "Vous ne pouvez pas décider d&#39;une demande de votre propre organisme." in refused.text


async def test_a_non_pdf_upload_is_refused_before_any_call(portal: PortalClient) -> None:
    await portal.login(PARTNER_ADMIN)
    portal.fakes.on(
        "access",
        "GET",
        f"/v1/access-requests/{REQUEST_ID}",
        httpx.Response(200, json=detail("documents_requested", requested_documents=["Convention"])),
    )
    page = await portal.client.get(f"/demandes/{REQUEST_ID}")
    assert 'enctype="multipart/form-data"' in page.text and "Retirer la demande" in page.text
    r = await portal.client.post(
        f"/demandes/{REQUEST_ID}/pieces",
        data={"csrf_token": csrf_of(page.text)},
        files={"documents": ("virus.exe", b"MZ\x90\x00", "application/pdf")},
    )
    assert r.status_code == 400 and "n&#39;est pas un document PDF" in r.text
    assert [c.method for c in portal.fakes.made("access")] == ["GET", "GET"]


async def test_documents_are_forwarded_as_pdf(portal: PortalClient) -> None:
    await portal.login(PARTNER_ADMIN)
    portal.fakes.on(
        "access",
        "POST",
        f"/v1/access-requests/{REQUEST_ID}/documents",
        httpx.Response(201, json={"id": REQUEST_ID, "state": "submitted"}),
    )
    portal.fakes.on(
        "access",
        "GET",
        f"/v1/access-requests/{REQUEST_ID}/documents/{DOC_ID}",
        httpx.Response(
            200, content=b"%PDF-1.7 doc", headers={"Content-Disposition": 'inline; filename="c.pdf"'}
        ),
    )
    token = await portal.csrf("/")
    r = await portal.client.post(
        f"/demandes/{REQUEST_ID}/pieces",
        data={"csrf_token": token},
        files=[("documents", ("c.pdf", b"%PDF-1.7 doc", "application/pdf"))],
    )
    assert r.status_code == 303 and r.headers["location"].endswith("?info=pieces")
    sent = portal.fakes.made("access")[0].request
    assert b'name="files"; filename="c.pdf"' in sent.content and b"%PDF-1.7 doc" in sent.content
    pdf = await portal.client.get(f"/documents/{REQUEST_ID}/{DOC_ID}")
    assert pdf.status_code == 200 and pdf.content == b"%PDF-1.7 doc"
    assert (
        pdf.headers["content-type"] == "application/pdf"
        and pdf.headers["content-security-policy"] == "sandbox"
    )


async def test_a_new_request_is_validated_then_submitted(portal: PortalClient) -> None:
    await portal.login(PARTNER_ADMIN)
    portal.fakes.on(
        "access",
        "GET",
        "/v1/profiles",
        httpx.Response(200, json={"profiles": {"T2": {"label": "Bailleurs"}}}),
    )
    portal.fakes.on(
        "identity", "GET", "/v1/organisations/org-1", httpx.Response(200, json={"department": "76"})
    )
    page = await portal.client.get("/demandes/nouvelle")
    assert 'value="76"' in page.text and "T2 — Bailleurs" in page.text
    token = csrf_of(page.text)
    bad = await portal.client.post("/demandes/nouvelle", data={"csrf_token": token, "email": "nope"})
    assert bad.status_code == 400 and "Adresse électronique invalide" in bad.text
    assert not [c for c in portal.fakes.made("access") if c.method == "POST"]
    portal.fakes.on(
        "access",
        "POST",
        "/v1/access-requests",
        httpx.Response(201, json={"id": REQUEST_ID, "state": "submitted"}),
    )
    form = {"csrf_token": token, **NEW_REQUEST, "valid_until": "2099-01-01", "idempotency_key": "k-1"}
    too_far = await portal.client.post("/demandes/nouvelle", data=form)
    assert too_far.status_code == 400 and "au plus un an" in too_far.text
    linked = await portal.client.post("/demandes/nouvelle", data=form | {"given_name": "Jules www.evil.fr"})
    assert linked.status_code == 400 and "ni adresse web" in linked.text
    assert not [c for c in portal.fakes.made("access") if c.method == "POST"]
    from datetime import date, timedelta

    ok = await portal.client.post(
        "/demandes/nouvelle", data=form | {"valid_until": (date.today() + timedelta(days=200)).isoformat()}
    )
    assert ok.status_code == 303 and ok.headers["location"] == f"/demandes/{REQUEST_ID}?info=deposee"
    call = next(c for c in portal.fakes.made("access") if c.method == "POST")
    body = json.loads(call.request.content)
    assert (
        body["organisation_id"] == "org-1" and body["applicant"]["job_title"] == "Chargé de gestion locative"
    )
    assert call.request.headers["idempotency-key"] == "k-1"


async def test_audit_search_passes_the_filters(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    entry = {
        "index": 7,
        "event_id": "e",
        "type": "dossier.consulted",
        "time": "2026-01-01T10:00:00+00:00",
        "actor": "user-t1",
        "subject": "1234567",
        "decision": "denied",
        "reason": "opposition",
        "motif": "accompagnement_social",
        "trace_id": "ab" * 16,
        "leaf": "",
    }
    portal.fakes.on(
        "audit", "GET", "/v1/entries", httpx.Response(200, json={"items": [entry], "next_cursor": None})
    )
    r = await portal.client.get(
        f"/audit?dossier=1234567&trace={'AB' * 16}&du=2026-01-01T08:00&type=dossier.consulted"
    )
    assert r.status_code == 200 and "s&#39;est opposé" in r.text
    assert f'<a class="reference" href="http://127.0.0.1:16686/trace/{"ab" * 16}">{"ab" * 16}</a>' in r.text
    params = portal.fakes.made("audit")[0].request.url.params
    assert params["dossier"] == "1234567" and params["trace_id"] == "ab" * 16
    assert params["from"] == "2026-01-01T08:00:00+01:00" and params["type"] == "dossier.consulted"
    bad = await portal.client.get("/audit?trace=nothex")
    assert bad.status_code == 400 and "32 caractères hexadécimaux" in bad.text
    assert len(portal.fakes.made("audit")) == 1


async def test_the_checkpoint_page(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    portal.fakes.on("audit", "GET", "/v1/checkpoints/latest", httpx.Response(404, json={"status": 404}))
    assert "Aucun point de contrôle" in (await portal.client.get("/audit/point-de-controle")).text
    body = {
        "origin": "cdap.audit/local",
        "tree_size": 12,
        "root_hash": "cm9vdA==",
        "note": "cdap.audit/local\n12\n",
    }
    portal.fakes.on("audit", "GET", "/v1/checkpoints/latest", httpx.Response(200, json=body))
    r = await portal.client.get("/audit/point-de-controle")
    assert "12 entrées" in r.text and "cm9vdA==" in r.text
    assert portal.fakes.made("audit")[-1].request.headers["accept"] == "application/json"


async def test_an_unreachable_service_is_a_french_error_page(portal: PortalClient) -> None:
    await portal.login(AUDITOR)

    def down(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    portal.fakes.on("audit", "GET", "/v1/alerts", down)
    r = await portal.client.get("/audit/alertes")
    assert r.status_code == 503 and "momentanément indisponible" in r.text


async def test_activation_shows_the_totp_secret_and_french_password_rules(portal: PortalClient) -> None:
    token = "a" * 43
    page = await portal.client.get(f"/activate?token={token}")
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
    csrf = csrf_of(page.text)
    mismatch = await portal.client.post(
        "/activate", data={"csrf_token": csrf, "token": token, "password": "x" * 12, "confirmation": "y" * 12}
    )
    assert mismatch.status_code == 400 and "pas identiques" in mismatch.text
    assert portal.fakes.calls == []
    portal.fakes.on(
        "identity",
        "POST",
        "/v1/activations",
        httpx.Response(
            422,
            json={
                "status": 422,
                "reason": "password_policy",
                "violations": ["This password is too common; choose one that is harder to guess."],
            },
        ),
    )
    weak = await portal.client.post(
        "/activate",
        data={"csrf_token": csrf, "token": token, "password": "password1234", "confirmation": "password1234"},
    )
    assert weak.status_code == 400 and "trop courant" in weak.text
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    portal.fakes.on(
        "identity",
        "POST",
        "/v1/activations",
        httpx.Response(
            200, json={"user_id": "u", "totp_secret": secret, "otpauth_uri": "otpauth://totp/CDAP:x"}
        ),
    )
    done = await portal.client.post(
        "/activate",
        data={
            "csrf_token": csrf,
            "token": token,
            "password": "a-good-long-phrase",
            "confirmation": "a-good-long-phrase",
        },
    )
    assert (
        done.status_code == 200
        and "JBSW Y3DP EHPK 3PXP" in done.text
        and "otpauth://totp/CDAP:x" in done.text
    )
    assert json.loads(portal.fakes.made("identity")[-1].request.content) == {
        "token": token,
        "password": "a-good-long-phrase",
    }
    portal.fakes.on(
        "identity", "POST", "/v1/activations", httpx.Response(400, json={"reason": "invalid_token"})
    )
    used = await portal.client.post(
        "/activate",
        data={
            "csrf_token": csrf,
            "token": token,
            "password": "a-good-long-phrase",
            "confirmation": "a-good-long-phrase",
        },
    )
    assert used.status_code == 400 and "a déjà servi ou a expiré" in used.text


async def test_the_footer_links_lead_to_the_mandatory_pages_and_the_design_system_is_served(
    portal: PortalClient,
) -> None:
    login = await portal.client.get("/login")
    links = re.findall(r'class="fr-footer__bottom-link" href="([^"]+)"', login.text)
    assert links == ["/accessibilite", "/mentions-legales", "/donnees-personnelles"]
    for link in links:
        page = await portal.client.get(link)
        assert page.status_code == 200, link
        assert "<h1>" in page.text
    statement = await portal.client.get("/accessibilite")
    assert "non conforme" in statement.text and "RGAA" in statement.text
    css = await portal.client.get("/static/dsfr/dsfr.min.css")
    assert css.status_code == 200 and ".fr-header" in css.text
    assert (await portal.client.get("/static/dsfr/fonts/Marianne-Regular.woff2")).status_code == 200
    assert portal.fakes.made() == []  # public pages: no service called


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        (1234.56, "1\u202f234,56\u00a0€"),
        (0, "0,00\u00a0€"),
        (141.5, "141,50\u00a0€"),
        (1234567, "1\u202f234\u202f567,00\u00a0€"),
        (-12.3, "-12,30\u00a0€"),
        ("987.654", "987,65\u00a0€"),
        ("beaucoup", "beaucoup"),
        (None, ""),
    ],
)
def test_sums_of_money_are_written_as_the_french_locale_does(amount: object, written: str) -> None:
    assert texts.euros(amount) == written
