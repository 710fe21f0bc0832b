"""The portal in a real browser (Debian's Chromium, headless) against the real services as processes.

Each person in their own browser context (own cookies):
- a partner user, provisioned from an approved request, activates their account from the mail's link,
  signs in with TOTP, looks up dossiers and sees only their profile's sections and the audit reference,
  all with JavaScript turned off;
- the whole path: a partner administrator asks for access, an instructor finds it in their work list
  ("À traiter", the organisation named, the business days left), opens it from the queue's mail and asks
  for documents (a folded form, then a confirmation stating the effect), the partner uploads them,
  instructor then manager approve (the instructor then has no form left: four eyes), the new user
  activates and looks up, an auditor finds that consultation (and its trace id), verifies its entry's
  inclusion proof and exports CSV; the partner administrator then writes in the thread, creates and
  rotates a partner-system client, a CAF administrator disables it from the organisation's page (the
  auditor finds that in the log by the administrator's e-mail), and the partner ends the grant;
- a CAF administrator registers an organisation, renews its convention, finds it by SIRET, resends its
  administrator's activation link (the second mail read from the SMTP sink), creates a staff account,
  suspends and reinstates it from the staff list (each change through its confirmation page).

Every page visited is screenshot at 1440 and 390 px into `test-artifacts/portal/`, must not scroll
sideways at either width, and (JavaScript on) gets no serious or critical axe-core violation.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cdap_cli.demo import CONVENTION_PDF
from cdap_portal import texts
from cdap_testing import MAIL_DIR, mails_to

from .system import ARTIFACTS, STRONG, System, activation_link, unique_email, wait_until

pytestmark = pytest.mark.stack

WIDE, NARROW = 1440, 390
# Contexts with JavaScript off: axe-core cannot run there (their pages are checked in the other story).
WITHOUT_SCRIPTS: weakref.WeakSet[BrowserContext] = weakref.WeakSet()
AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
T1_SECTIONS = [
    "identite",
    "adresse",
    "contact",
    "foyer",
    "ressources",
    "droits",
    "paiements",
    "quotient_familial",
    "logement",
]
PDF = CONVENTION_PDF  # access-requests parses uploads: a real one-page PDF


@pytest.fixture(scope="module")
def system(stack: dict[str, str]) -> Iterator[System]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    running = System(admin_url=stack["database"], kafka=stack["kafka"], logs=ARTIFACTS / "logs")
    try:
        running.start_core()
        running.bootstrap_admin()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def workflow(system: System) -> System:
    """access-requests and audit too; a failure to start them fails the test, with the log to read."""
    try:
        system.start_workflow()
    except RuntimeError as exc:
        pytest.fail(f"access-requests or audit did not start: {exc}")
    return system


def new_person(browser: Browser, javascript: bool = True) -> tuple[BrowserContext, Page]:
    # bypass_csp: the test injects axe-core into pages whose CSP allows only the portal's own scripts.
    context = browser.new_context(
        locale="fr-FR",
        viewport={"width": WIDE, "height": 900},
        java_script_enabled=javascript,
        bypass_csp=True,
    )
    context.set_default_timeout(15_000)
    if not javascript:
        WITHOUT_SCRIPTS.add(context)
    return context, context.new_page()


def shot(page: Page, name: str) -> None:
    """Screenshots at 1440 and 390 px; the page must fit 390 px without scrolling sideways, and (where the
    page may run scripts) axe-core must find no serious or critical violation at either width."""
    for width in (WIDE, NARROW):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        if page.context not in WITHOUT_SCRIPTS:
            assert_accessible(page, f"{name} at {width} px")
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{name}: the page is {scroll_width} px wide at {width} px"
    page.set_viewport_size({"width": WIDE, "height": 900})


def assert_accessible(page: Page, where: str) -> None:
    """axe-core (npm, pinned in services/portal/package-lock.json) run in the page: no serious or critical
    violation."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate("async () => (await axe.run(document)).violations")
    grave = [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert not grave, f"{where}: " + "; ".join(grave)


def activate(page: Page, email: str, name: str) -> str | None:
    """Open the mail's activation link, choose the password; returns the TOTP secret if one is shown."""
    page.goto(activation_link(email))
    expect(page.get_by_role("heading", name="Activation de votre compte")).to_be_visible()
    shot(page, f"{name}-activation")
    page.get_by_label("Nouveau mot de passe").fill(STRONG)
    page.get_by_label("Confirmez le mot de passe").fill(STRONG)
    page.get_by_role("button", name="Activer mon compte").click()
    secret_shown = page.locator("#totp-secret")
    if page.get_by_role("heading", name="Votre compte est activé").count():
        expect(secret_shown).to_be_visible()
        secret = secret_shown.get_attribute("data-secret")
        assert secret and (page.locator("#otpauth-uri").text_content() or "").startswith("otpauth://totp/")
        shot(page, f"{name}-activated-totp")
        page.get_by_role("link", name="J'ai enregistré la clé : me connecter").click()
        return secret
    expect(page.get_by_text("Votre compte est activé. Vous pouvez vous connecter.")).to_be_visible()
    return None


def sign_in(page: Page, system: System, email: str, secret: str | None, name: str) -> None:
    if "/login" not in page.url:
        page.goto(f"{system.url('portal')}/login")
    page.get_by_label("Adresse électronique").fill(email)
    page.get_by_label("Mot de passe", exact=True).fill(STRONG)
    shot(page, f"{name}-login")
    page.get_by_role("button", name="Se connecter").click()
    if secret:
        expect(page.get_by_role("heading", name="Code de vérification")).to_be_visible()
        shot(page, f"{name}-login-totp")
        page.get_by_label("Code à usage unique").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Valider").click()
    expect(page.get_by_role("heading", name="Bienvenue sur CDAP")).to_be_visible()
    shot(page, f"{name}-home")


def look_up(page: Page, system: System, numero: str, motif: str, until: str, within: float = 30.0) -> None:
    """Submit the lookup form until the page shows `until` (grants and dossiers arrive by Kafka)."""

    def attempt() -> bool:
        page.goto(f"{system.url('portal')}/dossiers")
        page.get_by_label("Numéro allocataire").fill(numero)
        page.get_by_label("Motif de la consultation").select_option(value=motif)
        page.get_by_role("button", name="Consulter", exact=True).click()
        return page.get_by_text(until, exact=False).count() > 0

    wait_until(attempt, within=within, interval=1.0, what=f"lookup of {numero} showing {until!r}")


def sections_shown(page: Page) -> list[str]:
    ids: list[str] = page.locator("section.dossier-section").evaluate_all("els => els.map(e => e.id)")
    return [i.removeprefix("section-") for i in ids]


def test_partner_user_activates_signs_in_with_totp_and_sees_only_their_profile(
    system: System, browser: Browser
) -> None:
    org = system.create_organisation("73282932000074", unique_email("gestionnaire"))
    numero, elsewhere, objected = "7600001", "2700001", "7600002"
    system.publish_dossier(numero)
    system.publish_dossier(elsewhere, department="27")
    system.publish_dossier(objected, opposition=True)
    email = unique_email("claire")
    system.approve_directly(org["id"], email, profile="T1")

    # Without JavaScript: the essential path must not depend on it (htmx only enhances).
    context, page = new_person(browser, javascript=False)
    try:
        secret = activate(page, email, "a-user")
        assert secret, "a T1 holder must enrol TOTP"
        sign_in(page, system, email, secret, "a-user")
        expect(page.get_by_role("navigation", name="Navigation principale")).to_contain_text(
            "Consulter un dossier"
        )

        look_up(page, system, numero, "accompagnement_social", until="Consultation enregistrée")
        shot(page, "a-user-dossier")
        assert sections_shown(page) == T1_SECTIONS  # never "rsa": T1 does not open it
        assert page.locator("#section-rsa").count() == 0
        assert UUID.fullmatch(page.locator("#audit-id").inner_text())
        assert re.fullmatch(r"[0-9a-f]{32}", page.locator("#trace-id").inner_text())
        expect(page.locator("#section-identite")).to_contain_text("Nom")

        look_up(page, system, elsewhere, "instruction_aide", until=texts.denial("no_grant_for_department"))
        expect(page.get_by_role("alert")).to_contain_text("Consultation refusée")
        assert UUID.fullmatch(page.locator("#audit-id").inner_text())
        shot(page, "a-user-denied-department")
        look_up(page, system, objected, "verification_droits", until=texts.denial("opposition"))
        shot(page, "a-user-denied-opposition")
        assert page.locator("section.dossier-section").count() == 0

        page.get_by_role("button", name="Se déconnecter").click()
        expect(page.get_by_text("Vous êtes déconnecté.")).to_be_visible()
        page.goto(f"{system.url('portal')}/dossiers")
        expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
    finally:
        context.close()


def test_a_t2_user_granted_t1_is_walked_through_totp_enrolment_at_sign_in(
    system: System, browser: Browser
) -> None:
    org = system.create_organisation("44306184100047", unique_email("gestionnaire"))
    email = unique_email("jules")
    system.approve_directly(org["id"], email, profile="T2")
    context, page = new_person(browser, javascript=False)
    try:
        assert activate(page, email, "c-t2") is None  # T2: a password is enough
        sign_in(page, system, email, None, "c-t2")
        page.get_by_role("button", name="Se déconnecter").click()

        # Granted T1 on the same account: the password alone no longer signs in.
        system.approve_directly(org["id"], email, profile="T1")
        wait_until(
            lambda: system.password_login(email) == "totp enrolment required", what="the T1 grant at identity"
        )
        page.goto(f"{system.url('portal')}/login")
        page.get_by_label("Adresse électronique").fill(email)
        page.get_by_label("Mot de passe", exact=True).fill(STRONG)
        page.get_by_role("button", name="Se connecter").click()
        expect(page.get_by_role("heading", name="Activez la double authentification")).to_be_visible()
        expect(page.locator("#totp-qr svg")).to_be_visible()  # the QR code, drawn by identity (segno)
        secret = page.locator("#totp-secret").get_attribute("data-secret")
        assert secret
        shot(page, "c-t1-enrolment")
        page.get_by_label("Premier code affiché par l'application").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Valider et me connecter").click()
        expect(page.get_by_role("heading", name="Bienvenue sur CDAP")).to_be_visible()
        shot(page, "c-t1-enrolled-home")
        # Enrolled: from now on identity asks for a code at each sign-in.
        assert system.password_login(email) == "totp required"
    finally:
        context.close()


@pytest.mark.timeout(900)  # the longest story: six people, every page screenshot and checked twice
def test_from_the_access_request_to_the_audit_trail(workflow: System, browser: Browser) -> None:
    system = workflow
    portal = system.url("portal")
    partner_email = unique_email("gestionnaire")
    organisation = system.create_organisation("55204944776279", partner_email)
    staff = {
        "instructor": (unique_email("instructeur"), ["caf_instructor"], "Instructeur"),
        "manager": (unique_email("responsable"), ["caf_manager"], "Responsable"),
        "auditor": (unique_email("auditeur"), ["auditor"], "Auditeur"),
        "admin": (unique_email("administrateur"), ["caf_admin"], "Administrateur"),
    }
    for email, roles, family in staff.values():
        system.create_staff(email, roles, family)
    numero = "7600101"
    system.publish_dossier(numero)
    applicant = unique_email("jules")
    people: dict[str, tuple[BrowserContext, Page]] = {}
    try:
        # -- partner administrator: activate, sign in, ask for access for a member of staff
        _partner_ctx, partner = people["partner"] = new_person(browser)
        assert activate(partner, partner_email, "b-partner") is None  # no TOTP for partner admins
        sign_in(partner, system, partner_email, None, "b-partner")
        request_url = _submit_request(partner, portal, applicant)
        expect(partner.locator("#request-state")).to_have_text("À instruire")
        shot(partner, "b-partner-request-submitted")

        secrets_of: dict[str, str | None] = {}
        for who, (email, _, _) in staff.items():
            people[who] = new_person(browser)
            secrets_of[who] = activate(people[who][1], email, f"b-{who}")
            assert secrets_of[who], f"{who}: CAF staff enrol TOTP"
            sign_in(people[who][1], system, email, secrets_of[who], f"b-{who}")

        # -- instructor: the work list ("À traiter", with the organisation's name and the days left)
        instructor = people["instructor"][1]
        instructor.goto(f"{portal}/instruction")
        expect(instructor.get_by_role("heading", name=re.compile("File d'instruction"))).to_be_visible()
        todo = instructor.get_by_role("row", name=re.compile("Jules Petit"))
        expect(todo).to_contain_text("CCAS de Rouen")
        expect(todo).to_contain_text("SIRET 552 049 447 76279")
        expect(todo).to_contain_text(re.compile(r"\d+ jours? ouvrés? restants?"))
        expect(instructor.locator("#views")).to_contain_text(re.compile(r"À traiter \(\d+\)"))
        shot(instructor, "b-instructor-queue")
        instructor.get_by_label("Organisme, SIRET ou personne").fill("ccas de rouen")
        instructor.get_by_role("button", name="Rechercher").click()
        expect(instructor.get_by_role("row", name=re.compile("Jules Petit"))).to_be_visible()
        shot(instructor, "b-instructor-queue-search")
        # The request is opened from the link in the mail its department's queue received.
        instructor.goto(mail_link("instruction-caf76@cdap.local", request_url.rsplit("/", 1)[-1]))
        expect(instructor).to_have_url(re.compile(r"/instruction/[0-9a-f-]{36}$"))
        expect(instructor.get_by_role("heading", name=re.compile("Jules Petit"))).to_be_visible()
        expect(instructor.locator("#request-state")).to_have_text("À instruire")
        expect(instructor.locator("#organisation")).to_have_text("CCAS de Rouen")
        expect(instructor.locator("#history")).to_contain_text("par Claire Durand")
        # The decision forms stay folded until one is opened; each decision is confirmed with its effect.
        expect(instructor.get_by_label("Pièces demandées")).to_be_hidden()
        instructor.locator("#decide-request_documents summary").click()
        instructor.get_by_label("Pièces demandées").fill("Convention signée\nBulletin d'adhésion")
        shot(instructor, "b-instructor-decision-open")
        instructor.get_by_role("button", name="Demander les pièces…").click()
        confirm_action(
            instructor, "b-instructor-documents-confirm", "Convention signée ; Bulletin d'adhésion"
        )
        expect(instructor.locator("#request-state")).to_have_text("Pièces demandées")
        shot(instructor, "b-instructor-documents-requested")
        instruction_url = instructor.url.split("?")[0]

        # -- partner: upload the PDF
        partner.goto(request_url)
        expect(partner.locator("#request-state")).to_have_text("Pièces demandées")
        partner.get_by_label("Documents PDF").set_input_files(
            [{"name": "convention-signee.pdf", "mimeType": "application/pdf", "buffer": PDF}]
        )
        shot(partner, "b-partner-upload")
        partner.get_by_role("button", name="Transmettre").click()
        expect(partner.get_by_text("Les pièces ont été transmises à la CAF.")).to_be_visible()
        expect(partner.locator("#request-state")).to_have_text("À instruire")

        # -- instructor: read the document, approve (stage 1)
        instructor.goto(instruction_url)
        link = instructor.get_by_role("link", name="convention-signee.pdf")
        pdf = instructor.request.get(portal + (link.get_attribute("href") or ""))
        assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.body() == PDF
        shot(instructor, "b-instructor-detail-with-document")
        instructor.locator("#decide-approve summary").click()
        instructor.get_by_role("button", name="Valider…").click()
        confirm_action(instructor, "b-instructor-approve-confirm", "validée au premier niveau")
        expect(instructor.locator("#request-state")).to_have_text("En attente de seconde validation")
        # Four eyes: the stage is the manager's now; the instructor has no form left, and is told why.
        expect(instructor.locator("#decision-waits")).to_contain_text("d'un responsable")
        expect(instructor.locator("details.decision")).to_have_count(0)

        # -- manager: second approval, from their work list, then every request filtered by state
        manager = people["manager"][1]
        manager.goto(f"{portal}/instruction")
        expect(manager.get_by_role("row", name=re.compile("Jules Petit"))).to_contain_text("CCAS de Rouen")
        shot(manager, "b-manager-queue")
        manager.get_by_role("link", name="Toutes les demandes").click()
        manager.get_by_label("État").select_option("awaiting_second_approval")
        manager.get_by_role("button", name="Rechercher").click()
        expect(manager).to_have_url(re.compile(r"etat=awaiting_second_approval"))
        shot(manager, "b-manager-queue-filtered")
        manager.get_by_role("link", name="Jules Petit").click()
        expect(manager.locator("#history")).to_contain_text("par Agent Instructeur")
        shot(manager, "b-manager-detail")
        manager.locator("#decide-approve summary").click()
        manager.get_by_role("button", name="Valider…").click()
        confirm_action(manager, "b-manager-approve-confirm", "est accordée à Jules Petit (CCAS de Rouen)")
        expect(manager.locator("#request-state")).to_have_text(re.compile("Accordée|Habilitation créée"))

        def provisioned() -> bool:
            manager.reload()
            return manager.locator("#request-state").inner_text() == "Habilitation créée"

        wait_until(provisioned, within=30, interval=1.0, what="request provisioned")
        shot(manager, "b-manager-provisioned")

        # -- the new user: activation mail, TOTP, lookup
        _user_ctx, user = people["user"] = new_person(browser)
        user_secret = activate(user, applicant, "b-user")
        sign_in(user, system, applicant, user_secret, "b-user")
        look_up(user, system, numero, "accompagnement_social", until="Consultation enregistrée")
        assert sections_shown(user) == T1_SECTIONS
        audit_id = user.locator("#audit-id").inner_text()
        trace_id = user.locator("#trace-id").inner_text()
        shot(user, "b-user-dossier")

        # -- auditor: who consulted this file, the entry by trace id, alerts, checkpoint
        auditor = people["auditor"][1]

        def consultation_listed() -> bool:
            auditor.goto(f"{portal}/audit/consultations?numero={numero}")
            return auditor.get_by_role("cell", name=trace_id).count() > 0

        wait_until(consultation_listed, within=30, interval=1.0, what="consultation in the audit log")
        row = auditor.locator("#consultations tbody tr", has_text=trace_id)
        expect(row).to_contain_text("Accompagnement social")
        expect(row).to_contain_text("Accordée")
        shot(auditor, "b-auditor-consultations")
        exported = auditor.request.get(portal + (auditor.locator("#csv-export").get_attribute("href") or ""))
        assert exported.status == 200 and trace_id in exported.text()
        entry_page = portal + (row.get_by_role("link").first.get_attribute("href") or "")

        def proof_verified() -> bool:  # checkpoints are signed every second: the entry is soon covered
            auditor.goto(entry_page)
            return auditor.locator("#proof-result").get_attribute("data-outcome") == "verified"

        wait_until(proof_verified, within=30, interval=1.0, what="inclusion proof verified")
        expect(auditor.locator("#proof-result")).to_contain_text("Entrée vérifiée")
        shot(auditor, "b-auditor-entry-verified")
        proof = auditor.request.get(portal + (auditor.locator("#proof-download").get_attribute("href") or ""))
        assert proof.status == 200 and proof.json()["entry"]["trace_id"] == trace_id
        auditor.goto(f"{portal}/audit")
        auditor.get_by_label("Identifiant de trace").fill(trace_id)
        auditor.get_by_role("button", name="Rechercher").click()
        entries = auditor.locator("#entries tbody tr")
        expect(entries).to_have_count(1)
        expect(entries.first).to_contain_text(numero)
        expect(entries.first).to_contain_text("Consultation d'un dossier")
        shot(auditor, "b-auditor-entries-by-trace")
        # The log says until when it is complete; the new user's consultation found by their e-mail.
        expect(auditor.locator("#log-freshness")).to_contain_text("Journal à jour au")
        auditor.get_by_label("Identifiant de trace").fill("")
        auditor.get_by_label("Acteur").fill(applicant)
        auditor.get_by_role("button", name="Rechercher").click()
        expect(auditor.locator("#entries tbody tr", has_text=trace_id)).to_have_count(1)
        shot(auditor, "b-auditor-entries-by-email")
        auditor.goto(f"{portal}/audit/point-de-controle")
        expect(auditor.locator("#tree-size")).to_contain_text("entrées")
        shot(auditor, "b-auditor-checkpoint")
        auditor.goto(f"{portal}/audit/alertes")
        expect(auditor.get_by_role("heading", name="Alertes")).to_be_visible()
        shot(auditor, "b-auditor-alerts")
        assert UUID.fullmatch(audit_id)

        # -- the partner sees the outcome in their list
        partner.goto(f"{portal}/demandes")
        expect(partner.get_by_role("row", name=re.compile("Jules Petit"))).to_contain_text(
            "Habilitation créée"
        )
        shot(partner, "b-partner-requests")

        # -- the partner administrator's own administration: the thread, a partner system, ending a grant
        partner.goto(request_url)
        expect(partner.locator("#stepper")).to_contain_text("Étape 4 sur 4")
        partner.get_by_label("Message").fill("Merci pour l'instruction.")
        partner.get_by_role("button", name="Envoyer le message").click()
        expect(partner.get_by_role("status")).to_contain_text("Votre message est envoyé")
        expect(partner.locator("#history")).to_contain_text("Merci pour l'instruction.")
        shot(partner, "b-partner-message-sent")

        partner.goto(f"{portal}/habilitations/clients")
        partner.get_by_label("Nom du système").fill("Logiciel de suivi social")
        partner.get_by_label("Habilitation utilisée").select_option(index=1)
        partner.get_by_role("button", name="Créer le client").click()
        first_secret = partner.locator("#secret-value").inner_text()
        assert len(first_secret) >= 20
        shot(partner, "b-partner-client-created")
        partner.goto(f"{portal}/habilitations/clients")
        assert first_secret not in partner.content()  # shown once, never again
        partner.get_by_role("button", name=re.compile("Renouveler le secret")).first.click()
        confirm_action(partner, "b-partner-rotate-confirm", "l'ancien ne fonctionne plus")
        second_secret = partner.locator("#secret-value").inner_text()
        assert second_secret and second_secret != first_secret
        shot(partner, "b-partner-client-rotated")

        # -- CAF administrator: the organisation's clients; one disabled (confirmed), found in the log
        admin = people["admin"][1]
        admin.goto(f"{portal}/administration/organismes/{organisation['id']}")
        expect(admin.locator("#clients")).to_contain_text("Logiciel de suivi social")
        shot(admin, "b-admin-organisation-clients")
        admin.get_by_role("button", name=re.compile("Désactiver")).first.click()
        confirm_action(admin, "b-admin-disable-client-confirm", "ne pourra plus obtenir de jeton")
        expect(admin.get_by_role("status")).to_contain_text("Le client est désactivé")
        expect(admin.locator("#clients")).to_contain_text("Désactivé")
        by_admin = f"{portal}/audit?acteur={quote(staff['admin'][0])}&type=identity.client.disabled"

        def disabling_logged() -> bool:
            auditor.goto(by_admin)
            return auditor.locator("#entries tbody tr").count() > 0

        wait_until(disabling_logged, within=30, interval=1.0, what="the client's disabling in the audit log")
        expect(auditor.locator("#entries tbody tr").first).to_contain_text("Client désactivé")
        shot(auditor, "b-auditor-client-disabled")

        partner.goto(f"{portal}/habilitations")
        shot(partner, "b-partner-grants")
        partner.get_by_role("button", name=re.compile("Mettre fin")).first.click()
        confirm_action(partner, "b-partner-end-grant-confirm", "ne pourra plus consulter")
        expect(partner.get_by_role("status")).to_contain_text("La fin de l'habilitation est demandée")

        def grant_ended() -> bool:  # access-requests forwards the removal, identity revokes
            partner.goto(f"{portal}/habilitations")
            return partner.get_by_role("button", name=re.compile("Mettre fin")).count() == 0

        wait_until(grant_ended, within=60, interval=1.0, what="grant revoked after the removal request")
        expect(partner.locator("#grants")).to_contain_text("Révoquée")
        shot(partner, "b-partner-grant-ended")
    finally:
        for context, _ in people.values():
            context.close()


def mail_link(mailbox: str, request_id: str) -> str:
    """The portal link of the newest mail about `request_id` sent to `mailbox`."""

    def link() -> str | None:
        about = [m for m in mails_to(MAIL_DIR, mailbox) if request_id in m]
        found = re.findall(r"(http://\S+/access-requests/" + request_id + ")", about[-1]) if about else []
        return found[-1] if found else None

    found: str = wait_until(link, within=30, what=f"mail to {mailbox} about {request_id}")
    return found


def _submit_request(page: Page, portal: str, applicant: str) -> str:
    """Fill the new-request form (retrying while access-requests has not yet heard of the organisation)."""

    attempts: list[int] = []

    def attempt() -> Any:
        attempts.append(1)
        page.goto(f"{portal}/demandes/nouvelle")
        page.get_by_label("Nom", exact=True).fill("Petit")
        page.get_by_label("Prénom", exact=True).fill("Jules")
        page.get_by_label("Adresse électronique professionnelle").fill(applicant)
        page.get_by_label("Fonction").fill("Conseiller en économie sociale et familiale")
        page.get_by_label("Profil", exact=True).select_option("T1")
        page.get_by_label("Justification").fill("Accompagnement des familles suivies par le CCAS")
        if len(attempts) == 1:
            shot(page, "b-partner-request-form")
        page.get_by_role("button", name="Déposer la demande").click()
        if page.get_by_text("Votre demande a été déposée.").count() > 0:
            return True
        page.screenshot(path=str(ARTIFACTS / "b-partner-request-not-yet.png"), full_page=True)
        return False

    wait_until(attempt, within=60, interval=1.0, what="request submitted")
    return page.url.split("?")[0]


def confirm_action(page: Page, name: str, effect: str) -> None:
    """The confirmation page states the action's effect; confirm it."""
    expect(page.locator("#effect")).to_contain_text(effect)
    shot(page, name)
    page.get_by_role("button", name="Confirmer").click()


@pytest.mark.timeout(600)
def test_a_caf_admin_registers_an_organisation_renews_its_convention_and_suspends_an_account(
    system: System, browser: Browser
) -> None:
    portal = system.url("portal")
    admin_email = unique_email("administratrice")
    system.create_staff(admin_email, ["caf_admin"], "Administratrice")
    context, page = new_person(browser)
    try:
        secret = activate(page, admin_email, "c-admin")
        sign_in(page, system, admin_email, secret, "c-admin")

        # -- register an organisation and its administrator
        page.get_by_role("link", name="Organismes", exact=True).first.click()
        shot(page, "c-admin-organisations")
        page.get_by_role("link", name="Enregistrer un organisme").click()
        page.get_by_label("Nom de l'organisme").fill("Centre social des Hauts de Rouen")
        page.get_by_label("SIRET").fill("32929709700035")
        page.get_by_label("Département").fill("76")
        page.get_by_label("Type d'organisme").select_option("ccas")
        page.get_by_label("Référence de la convention").fill("CONV-76-0047")
        page.get_by_label("Fin de la convention").fill("2027-06-30")
        page.get_by_label("Nom", exact=True).fill("Lemoine")
        page.get_by_label("Prénom", exact=True).fill("Sarah")
        manager_email = unique_email("gestionnaire")
        page.get_by_label("Adresse électronique professionnelle").fill(manager_email)
        shot(page, "c-admin-organisation-form")
        page.get_by_role("button", name="Enregistrer l'organisme").click()
        expect(page.get_by_role("heading", name="Centre social des Hauts de Rouen")).to_be_visible()
        expect(page.locator("#convention")).to_contain_text("30 juin 2027")
        shot(page, "c-admin-organisation")

        # -- renew its convention: asked, then done
        page.get_by_label("Référence de la convention").fill("CONV-76-0047-A1")
        page.get_by_label("Nouvelle fin de la convention").fill("2028-06-30")
        page.get_by_role("button", name="Enregistrer la convention").click()
        confirm_action(page, "c-admin-convention-confirm", "court jusqu'au 30 juin 2028")
        expect(page.get_by_role("status")).to_contain_text("La convention est enregistrée")
        expect(page.locator("#convention")).to_contain_text("CONV-76-0047-A1, jusqu'au 30 juin 2028")

        # -- find it by SIRET
        page.goto(f"{portal}/administration/organismes?q=329297097")
        expect(page.locator("#organisations tbody tr")).to_have_count(1)
        expect(page.locator("#organisations")).to_contain_text("CONV-76-0047-A1")
        shot(page, "c-admin-organisations-by-siret")

        # -- its administrator has not activated yet: a new link, by mail
        page.goto(f"{portal}/administration/organismes?q=329297097")
        page.get_by_role("link", name="Centre social des Hauts de Rouen").click()
        page.get_by_role("button", name="Renvoyer le lien d'activation : Sarah Lemoine").click()
        confirm_action(page, "c-admin-resend-confirm", "Compte de Sarah Lemoine")
        expect(page.get_by_role("status")).to_contain_text("Un nouveau lien d'activation a été envoyé.")
        wait_until(lambda: len(mails_to(MAIL_DIR, manager_email)) == 2, what="the second activation mail")

        # -- a CAF staff account: create, then from the list suspend, reinstate
        page.get_by_role("link", name="Comptes CAF").click()
        page.get_by_label("Nom", exact=True).fill("Girard")
        page.get_by_label("Prénom", exact=True).fill("Hugo")
        page.get_by_label("Adresse électronique professionnelle").fill(unique_email("instructeur"))
        page.get_by_label("Instructeur CAF").check(force=True)  # the DSFR draws the box on the label
        page.get_by_role("button", name="Créer le compte").click()
        expect(page.get_by_role("status")).to_contain_text("Le compte est créé")
        row = page.get_by_role("row", name=re.compile("Hugo Girard"))
        expect(row.locator(".account-status")).to_have_text("En attente d'activation")
        shot(page, "c-admin-account-created")
        row.get_by_role("button", name="Suspendre le compte : Hugo Girard").click()
        confirm_action(page, "c-admin-suspend-confirm", "ne pourra plus se connecter")
        expect(page.get_by_role("status")).to_contain_text("Le compte est suspendu.")
        page.get_by_label("Nom ou adresse électronique").fill("girard")
        page.get_by_role("button", name="Rechercher").click()
        row = page.get_by_role("row", name=re.compile("Hugo Girard"))
        expect(row.locator(".account-status")).to_have_text("Suspendu")
        shot(page, "c-admin-staff-list")
        row.get_by_role("button", name="Rétablir le compte : Hugo Girard").click()
        confirm_action(page, "c-admin-reinstate-confirm", "pourra de nouveau se connecter")
        page.get_by_label("Nom ou adresse électronique").fill("girard")
        page.get_by_role("button", name="Rechercher").click()
        expect(
            page.get_by_role("row", name=re.compile("Hugo Girard")).locator(".account-status")
        ).to_have_text("En attente d'activation")
        shot(page, "c-admin-account-reinstated")

        # -- the footer's mandatory pages, and an error page (a partner user's page, refused)
        for link, name in (
            ("Accessibilité : non conforme", "c-accessibility"),
            ("Mentions légales", "c-legal-notice"),
            ("Données personnelles", "c-personal-data"),
        ):
            page.locator("footer").get_by_role("link", name=link).click()
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            shot(page, name)
        page.goto(f"{portal}/dossiers")
        expect(page.get_by_role("heading", name="Accès refusé")).to_be_visible()
        shot(page, "c-error-403")
    finally:
        context.close()
