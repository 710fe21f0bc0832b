"""Holes a partner could open with what it files: a second account for someone's e-mail, and names that
carry line breaks or links into the activation mails."""

from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import func, select

from cdap_identity.models import Organisation, User
from cdap_testing import MAIL_DIR, eventually, mails_to

from .conftest import SIRETS, STRONG, Identity, auth, unique_email
from .test_grants import approved

pytestmark = pytest.mark.stack


async def test_caf_staff_still_sign_in_when_a_partner_obtains_an_account_for_their_e_mail(
    idp: Identity,
) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    # A partner files (and the CAF approves) a request naming the CAF admin's own address.
    await idp.publish(idp.settings.access_topic, approved(org["id"], admin["email"], "T2"))
    await eventually(lambda: idp.outbox("identity.grant.issued"))
    async with idp.app.state.sessions() as s:
        same = await s.execute(select(func.count()).select_from(User).where(User.email == admin["email"]))  # type: ignore[arg-type]
        assert same.scalar_one() == 2

    # Without organisation_id, as the portal signs in: the password decides, never "several accounts".
    wrong = await idp.token(admin["email"], "not the password at all")
    assert wrong.json() == {"error": "invalid_grant", "error_description": "bad credentials"}
    await idp.forget_used_codes()
    signed_in = await idp.token(admin["email"], STRONG, pyotp.TOTP(admin["totp"]).now())
    assert signed_in.status_code == 200, signed_in.text


async def test_the_organisation_is_asked_only_once_the_password_is_proven(idp: Identity) -> None:
    admin = await idp.caf_admin()
    first = await idp.create_organisation(admin, siret=SIRETS[0])
    second = await idp.create_organisation(admin, siret=SIRETS[1])
    email = unique_email("agent")
    for org, request_id in ((first, "req-a"), (second, "req-b")):
        await idp.publish(idp.settings.access_topic, approved(org["id"], email, "T2", request_id=request_id))

    async def two_mails() -> bool:
        return len(mails_to(MAIL_DIR, email)) == 2

    await eventually(two_mails, within=60)
    # Only the first account is activated: its password opens exactly one account.
    link = re.search(r"/activate\?token=([\w-]+)", mails_to(MAIL_DIR, email)[0])
    assert link
    await idp.client.post("/v1/activations", json={"token": link.group(1), "password": STRONG})
    assert (await idp.token(email, STRONG)).status_code == 200
    assert (await idp.token(email, "a wrong password!")).json()["error_description"] == "bad credentials"

    # Both activated with the same password: now, and only now, identity asks which organisation.
    link = re.search(r"/activate\?token=([\w-]+)", mails_to(MAIL_DIR, email)[1])
    assert link
    await idp.client.post("/v1/activations", json={"token": link.group(1), "password": STRONG})
    ambiguous = await idp.token(email, STRONG)
    assert ambiguous.status_code == 400 and ambiguous.json()["error"] == "invalid_request"
    assert sorted(o["id"] for o in ambiguous.json()["organisations"]) == sorted([first["id"], second["id"]])
    assert {o["name"] for o in ambiguous.json()["organisations"]} == {"Logeo Seine"}
    chosen = await idp.token(email, STRONG, organisation_id=second["id"])
    assert chosen.status_code == 200, chosen.text


BAD_NAMES = [
    "Claire\nhttps://evil.example/activate?token=FAKE",
    "Claire\r\nBcc: someone@example.org",
    "Durand www.evil.fr",
    "Durand evil.com",
    "Claire\u202eerdnaxela",  # right-to-left override: shows reversed text
    "Claire\x00",
    "voir https://evil.example",
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_names_with_line_breaks_or_links_are_refused_and_change_nothing(
    idp: Identity, name: str
) -> None:
    admin = await idp.caf_admin()
    person = {"email": unique_email(), "family_name": "Durand", "given_name": name}
    org = {
        "siret": SIRETS[0],
        "name": "Logeo Seine",
        "kind": "bailleur",
        "department": "76",
        "convention": {"reference": "CONV-76-001", "valid_until": "2030-12-31"},
        "administrators": [person],
    }
    refusals = [
        await idp.client.post("/v1/organisations", json=org, headers=auth(admin)),
        await idp.client.post("/v1/organisations", json=org | {"name": name}, headers=auth(admin)),
        await idp.client.post(
            "/v1/users", json=person | {"roles": ["caf_instructor"], "department": "76"}, headers=auth(admin)
        ),
    ]
    for refused in refusals:
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
    async with idp.app.state.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Organisation))).scalar_one() == 0
        assert (await s.execute(select(func.count()).select_from(User))).scalar_one() == 1  # the admin
    assert await idp.queued_mails() == []


@pytest.mark.parametrize(
    "name",
    ["Jean-Pierre", "O'Brien", "N\u2019Diaye", "Ève Dupont-Lefèvre", "J. R. Tolkien", "S.A.R.L. Habitat 76"],
)
async def test_real_names_pass(idp: Identity, name: str) -> None:
    admin = await idp.caf_admin()
    person = {"email": unique_email(), "family_name": name, "given_name": name}
    r = await idp.client.post(
        "/v1/users", json=person | {"roles": ["caf_instructor"], "department": "76"}, headers=auth(admin)
    )
    assert r.status_code == 201, r.text


async def test_a_name_carrying_a_fake_link_cannot_add_one_to_the_activation_mail(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = unique_email("agent")
    fake = "\n\nhttps://evil.example/activate?token=FAKEFAKEFAKEFAKEFAKEFAKE\n\n"
    # By event, names skip the API's validation (e.g. a request filed before the rule): the mail holds.
    event = approved(org["id"], email, "T2")
    event.data["applicant"]["given_name"] = f"Jules{fake}"
    event.data["applicant"]["family_name"] = "Petit www.evil.fr"
    await idp.publish(idp.settings.access_topic, event)

    async def mails() -> list[str]:
        return mails_to(MAIL_DIR, email)

    [mail] = await eventually(mails, within=60)  # through Kafka, the outbox and the SMTP sink
    links = re.findall(r"\S*activate\?token=\S*", mail)
    assert len(links) == 1 and "FAKE" not in links[0], mail
    # Nothing else in it reads as a link or a host a mail reader would make clickable.
    assert mail.count("://") == 1 and not re.search(r"(www|evil)\.\S", mail), mail
    # The one link is the real one: it activates the account.
    token = links[0].split("token=")[1]
    r = await idp.client.post("/v1/activations", json={"token": token, "password": STRONG})
    assert r.status_code == 200, r.text
    # No line of the mail is a name on its own before the link.
    body = mail.split("\n\n", 1)[1]
    before_link = body[: body.index(links[0])]
    assert "Jules" not in before_link and "Petit" not in before_link
