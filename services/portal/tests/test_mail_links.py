"""Every link of every mail the services send leads to a page of the portal for the person it goes to.

The mails are built by the services' own functions (access-requests' notification body for every
action, identity's activation and reset mails); each URL in them is opened in the portal, signed in with
the role of the recipient (the instructors' and managers' mailboxes, the partner administrator), and the
redirects are followed to a page that shows the request — never a 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime

import httpx
import pytest

from cdap_access.config import Settings as AccessSettings
from cdap_access.models import AccessRequest
from cdap_access.notifications import INSTRUCTORS, MANAGERS, PARTNER, RECIPIENTS, SUBJECTS, body
from cdap_audit.notifications import AlertNotice, critical_mail, digest_mail
from cdap_identity.models import User
from cdap_identity.notifications import activation_mail, reset_mail
from cdap_identity.passwords import new_token

from .conftest import AUDITOR, INSTRUCTOR, PARTNER_ADMIN, PortalClient

PORTAL = "http://portal.test"
URL = re.compile(r"https?://\S+")
REQUEST_ID = "0b5f1c9e-8a4d-4a57-9a51-3c0f2d7e6b11"
APPLICANT = {"family_name": "Petit", "given_name": "Jules", "email": "j@example.fr", "job_title": "CESF"}
# The person behind each recipient of access-requests' mails.
ROLE_OF = {
    INSTRUCTORS: INSTRUCTOR,
    MANAGERS: {**INSTRUCTOR, "sub": "mgr", "roles": ["caf_manager"]},
    PARTNER: PARTNER_ADMIN,
}


def a_request() -> AccessRequest:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    return AccessRequest(
        id=REQUEST_ID,
        organisation_id="org-1",
        applicant=APPLICANT,
        applicant_email=APPLICANT["email"],
        contact_email="admin@example.fr",
        submitted_by="padmin",
        submitted_at=now,
        state_since=now,
        due=date(2026, 12, 10),
        profile="T1",
        department="76",
        valid_until=date(2027, 6, 30),
        justification="Accompagnement",
        sensitive=False,
    )


def detail() -> dict[str, object]:
    """The request as access-requests' API shows it."""
    shown = a_request().model_dump(mode="json", exclude={"applicant_email", "contact_email"})
    return shown | {"state": "submitted", "stage": 1, "history": [], "documents": []}


def access_mail_links() -> list[tuple[str, str, str]]:
    """(action, recipient, url) for every action's mail, to every recipient that action may reach.

    Actions sent to explicit recipients (reminders, comments) are tried with every recipient."""
    settings = AccessSettings(portal_url=PORTAL)
    links = []
    for action in SUBJECTS:
        text = body(settings, a_request(), action, "un commentaire", ["Convention"], "CCAS de Rouen")
        for recipient in RECIPIENTS.get(action) or (INSTRUCTORS, MANAGERS, PARTNER):
            links += [(action, recipient, url) for url in URL.findall(text)]
    return links


@pytest.mark.parametrize(("action", "recipient", "url"), access_mail_links())
async def test_every_access_request_mail_link_opens_the_request_for_its_recipient(
    make_portal: Callable[..., PortalClient], action: str, recipient: str, url: str
) -> None:
    portal = make_portal(base_url=PORTAL)
    portal.fakes.on("access", "GET", f"/v1/access-requests/{REQUEST_ID}", httpx.Response(200, json=detail()))
    portal.fakes.on("identity", "GET", "/v1/organisations/org-1", httpx.Response(200, json={"id": "org-1"}))
    assert url.startswith(PORTAL)

    # Not signed in yet: the login page, which then comes back to the same address.
    first = await portal.client.get(url)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?suite=")

    await portal.login(ROLE_OF[recipient])
    page = await portal.client.get(url, follow_redirects=True)
    assert page.status_code == 200, (action, recipient, page.status_code)
    assert "Demande d'habilitation : Jules Petit" in page.text
    expected = "/demandes/" if recipient == PARTNER else "/instruction/"
    assert page.url.path == expected + REQUEST_ID


def test_the_access_request_mails_all_carry_a_link() -> None:
    assert {action for action, _, _ in access_mail_links()} == set(SUBJECTS)


@pytest.mark.parametrize("action", sorted(SUBJECTS))
def test_the_access_request_mails_name_the_organisation_and_the_person(action: str) -> None:
    text = body(AccessSettings(portal_url=PORTAL), a_request(), action, None, [], "CCAS de Rouen")
    assert "Organisme : CCAS de Rouen" in text and "org-1" not in text
    assert "pour Jules Petit, CESF" in text


def identity_mails() -> list[tuple[str, str]]:
    user = User(id="u-1", email="claire@example.fr", family_name="Durand", given_name="Claire")
    return [
        ("activation", activation_mail(user, new_token(), PORTAL, 72).body),
        ("reset", reset_mail(user, new_token(), PORTAL, 72).body),
    ]


@pytest.mark.parametrize(("kind", "text"), identity_mails(), ids=["activation", "reset"])
async def test_identity_mail_links_open_the_activation_page(
    make_portal: Callable[..., PortalClient], kind: str, text: str
) -> None:
    portal = make_portal(base_url=PORTAL)
    links = URL.findall(text)
    assert links, kind
    for url in links:
        page = await portal.client.get(url)
        assert page.status_code == 200, (kind, url)
        assert "Activation de votre compte" in page.text
        assert 'name="token"' in page.text


def alert_mails() -> list[tuple[str, str]]:
    notice = AlertNotice(
        alert_id="al-1",
        rule="denials_burst",
        severity="critical",
        detail="3 refus en 10 minutes",
        event_time=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
        actor="u-1",
        actor_name="Claire Durand",
        organisation_name="CCAS de Rouen",
    )
    return [
        ("critical", critical_mail("a@caf.fr", notice, PORTAL).body),
        ("digest", digest_mail("a@caf.fr", [notice], date(2026, 11, 30), PORTAL).body),
    ]


@pytest.mark.parametrize(("kind", "text"), alert_mails(), ids=["critical", "digest"])
async def test_alert_mails_name_people_and_lead_to_the_alerts_page(
    make_portal: Callable[..., PortalClient], kind: str, text: str
) -> None:
    assert "Compte : Claire Durand (u-1)" in text and "Organisation : CCAS de Rouen" in text
    portal = make_portal(base_url=PORTAL)
    portal.fakes.on(
        "audit", "GET", "/v1/alerts", httpx.Response(200, json={"items": [], "next_cursor": None})
    )
    await portal.login(AUDITOR)
    links = URL.findall(text)
    assert links, kind
    for url in links:
        page = await portal.client.get(url, follow_redirects=True)
        assert page.status_code == 200 and page.url.path == "/audit/alertes", (kind, url)


@pytest.mark.parametrize(("kind", "text"), identity_mails(), ids=["activation", "reset"])
def test_identity_mails_name_the_person(kind: str, text: str) -> None:
    assert "Ce compte est au nom de Claire Durand." in text, kind
