"""The account list (names, state, search, pages, scope) and resending an activation link."""

from __future__ import annotations

from typing import Any

import pytest

from cdap_testing import MAIL_DIR, eventually, mails_to

from .conftest import SIRETS, STRONG, Identity, auth, unique_email

pytestmark = pytest.mark.stack


async def _staff(idp: Identity, admin: dict[str, str], family: str, given: str) -> dict[str, Any]:
    body = {
        "email": unique_email(family.lower()),
        "family_name": family,
        "given_name": given,
        "roles": ["caf_instructor"],
        "department": "76",
    }
    r = await idp.client.post("/v1/users", json=body, headers=auth(admin))
    assert r.status_code == 201, r.text
    return {**r.json(), "email": body["email"]}


async def _users(idp: Identity, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await idp.client.get("/v1/users", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_caf_admins_list_staff_by_name_search_and_page_through_them(idp: Identity) -> None:
    admin = await idp.caf_admin()
    tag = unique_email("x")[2:10]
    made = [await _staff(idp, admin, f"Zorn{tag}", given) for given in ("Inès", "Bruno", "Anne")]
    org = await idp.create_organisation(admin)

    found = await _users(idp, admin, staff="true", q=f"zorn{tag}")
    assert [u["display_name"] for u in found["items"]] == [
        f"{g} Zorn{tag}" for g in ("Anne", "Bruno", "Inès")
    ]
    assert {u["status"] for u in found["items"]} == {"pending"} and found["next_cursor"] is None
    assert all(u["organisation_id"] is None and not u["locked"] for u in found["items"])
    # The partner's administrator is not staff, and a search by e-mail finds them among partners.
    assert org["administrators"][0] not in [
        u["id"] for u in (await _users(idp, admin, staff="true"))["items"]
    ]
    partners = await _users(idp, admin, staff="false", q=org["admin_emails"][0])
    assert [u["id"] for u in partners["items"]] == org["administrators"]

    seen, cursor = [], None
    while True:
        page = await _users(idp, admin, q=f"zorn{tag}", limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [u["id"] for u in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(seen) == sorted(u["id"] for u in made) and len(seen) == 3

    by_id = await _users(idp, admin, id=[made[0]["id"], org["administrators"][0]])
    assert {u["display_name"] for u in by_id["items"]} == {f"Inès Zorn{tag}", "Claire Durand"}

    r = await idp.client.post(f"/v1/users/{made[1]['id']}/suspend", headers=auth(admin))
    assert r.status_code == 200
    suspended = await _users(idp, admin, q=f"zorn{tag}", status="suspended")
    assert [u["id"] for u in suspended["items"]] == [made[1]["id"]]

    r = await idp.client.get("/v1/users", params={"cursor": "not-a-cursor"}, headers=auth(admin))
    assert r.status_code == 400 and r.json()["reason"] == "bad_cursor"
    r = await idp.client.get("/v1/users", params={"status": "dormant"}, headers=auth(admin))
    assert r.status_code == 422


async def test_a_partner_admin_resends_an_activation_link_and_only_the_new_one_works(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin, n_admins=2)
    other = await idp.create_organisation(admin, siret=SIRETS[1])
    first, second = org["admin_emails"]
    await idp.activate(first)
    login = await idp.token(first, STRONG)
    partner = {"Authorization": f"Bearer {login.json()['access_token']}"}
    old_link = await idp.activation_token_from_mail(second)

    # The partner admin reads their organisation's accounts by name, and nobody else's.
    mine = await _users(idp, partner)
    assert {u["id"] for u in mine["items"]} == set(org["administrators"])

    r = await idp.client.post(f"/v1/users/{org['administrators'][1]}/resend-activation", headers=partner)
    assert r.status_code == 200, r.text

    async def two_mails() -> list[str] | None:
        found = mails_to(MAIL_DIR, second)
        return found if len(found) == 2 else None

    mails = await eventually(two_mails, within=30)  # through the mail outbox and the SMTP sink
    assert mails[1].startswith("Subject: CDAP : activez votre compte")
    new_link = await idp.activation_token_from_mail(second)
    assert new_link != old_link
    r = await idp.client.post("/v1/activations", json={"token": old_link, "password": STRONG})
    assert r.status_code == 400, "the earlier link must stop working"
    r = await idp.client.post("/v1/activations", json={"token": new_link, "password": STRONG})
    assert r.status_code == 200, r.text
    [event] = await idp.outbox("identity.user.activation_resent")
    assert event.data["user_id"] == org["administrators"][1] and event.data["by"] == org["administrators"][0]

    # Already activated: nothing to resend. Another organisation's account: as if unknown.
    r = await idp.client.post(f"/v1/users/{org['administrators'][1]}/resend-activation", headers=partner)
    assert r.status_code == 409 and r.json()["reason"] == "already_activated"
    r = await idp.client.post(f"/v1/users/{other['administrators'][0]}/resend-activation", headers=partner)
    assert r.status_code == 404
    assert len(mails_to(MAIL_DIR, other["admin_emails"][0])) == 1


async def test_a_caf_admin_resends_a_staff_members_activation_link(idp: Identity) -> None:
    admin = await idp.caf_admin()
    staff = await _staff(idp, admin, "Lenoir", "Hugo")
    r = await idp.client.post(f"/v1/users/{staff['id']}/resend-activation", headers=auth(admin))
    assert r.status_code == 200, r.text

    async def two_mails() -> list[str] | None:
        found = mails_to(MAIL_DIR, staff["email"])
        return found if len(found) == 2 else None

    await eventually(two_mails, within=30)
    assert (await idp.activate(staff["email"]))["totp_secret"]  # the newest link activates the account
