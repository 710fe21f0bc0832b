"""Sessions and CSRF: cookie flags, login with TOTP, transparent refresh, logout on expiry, forged forms."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from cdap_portal.session import COOKIE, PENDING_COOKIE, Session, SessionCodec

from .conftest import PARTNER_ADMIN, T1_USER, PortalClient, csrf_of, tokens


def set_cookie_header(response: httpx.Response, name: str) -> str:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert found, response.headers
    return found[-1]


async def test_the_session_cookie_is_httponly_lax_and_not_secure_over_http(portal: PortalClient) -> None:
    page = await portal.client.get("/login")
    header = set_cookie_header(page, COOKIE).lower()
    assert "httponly" in header and "samesite=lax" in header and "path=/" in header
    assert "secure" not in header.replace("httponly", "")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_session_cookie_is_secure_over_https(make_portal: Callable[..., PortalClient]) -> None:
    portal = make_portal(base_url="https://portal.test")
    header = set_cookie_header(await portal.client.get("/login"), COOKIE).lower()
    assert "; secure" in header and "httponly" in header and "samesite=lax" in header
    await portal.client.aclose()


async def test_the_cookie_holds_the_tokens_encrypted(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    raw = portal.client.cookies[COOKIE]
    assert "access_token" not in raw and "refresh-1" not in raw
    assert "eyJ" not in raw  # no JWT in clear


async def test_a_tampered_cookie_is_an_anonymous_visitor(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    raw = portal.client.cookies[COOKIE]
    portal.client.cookies.set(COOKIE, raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB"))
    r = await portal.client.get("/dossiers")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_pages_need_a_session(portal: PortalClient) -> None:
    r = await portal.client.get("/dossiers")
    assert r.status_code == 303 and r.headers["location"] == "/login?suite=/dossiers"
    assert portal.fakes.calls == []


async def test_login_with_totp_step(portal: PortalClient) -> None:
    answers = iter(
        [
            httpx.Response(400, json={"error": "invalid_grant", "error_description": "totp required"}),
            httpx.Response(400, json={"error": "invalid_grant", "error_description": "bad credentials"}),
            httpx.Response(200, json=tokens(T1_USER)),
        ]
    )
    portal.fakes.on("identity", "POST", "/v1/token", lambda _r: next(answers))
    token = await portal.csrf()
    first = await portal.client.post(
        "/login",
        data={"csrf_token": token, "step": "password", "email": "claire@example.fr", "password": "s3cret!"},
    )
    assert first.status_code == 200 and "Code de vérification" in first.text
    pending = set_cookie_header(first, PENDING_COOKIE).lower()
    assert "httponly" in pending and "path=/login" in pending and "max-age=300" in pending
    assert "s3cret" not in pending

    wrong = await portal.client.post("/login", data={"csrf_token": token, "step": "totp", "totp": "123456"})
    assert wrong.status_code == 400 and "Code incorrect" in wrong.text
    assert 'aria-invalid="true"' in wrong.text and 'aria-describedby="h-totp e-totp"' in wrong.text

    ok = await portal.client.post("/login", data={"csrf_token": token, "step": "totp", "totp": "654321"})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    forms = [c.form() for c in portal.fakes.made("identity")]
    assert forms[0] == {"grant_type": "password", "username": "claire@example.fr", "password": "s3cret!"}
    assert forms[2]["totp"] == "654321" and forms[2]["password"] == "s3cret!"
    # Signing in starts a new session id: the CSRF token of the login page no longer works.
    assert (await portal.client.post("/logout", data={"csrf_token": token})).status_code == 403


@pytest.mark.parametrize(
    ("description", "french"),
    [
        ("bad credentials", "mot de passe ou code incorrect"),
        ("account suspended", "Votre compte est suspendu"),
        ("account locked until 2026-11-27T10:00:00+00:00", "temporairement verrouillé"),
        ("password reset required", "nouveau mot de passe"),
    ],
)
async def test_login_refusals_in_french(portal: PortalClient, description: str, french: str) -> None:
    portal.fakes.on(
        "identity",
        "POST",
        "/v1/token",
        httpx.Response(400, json={"error": "invalid_grant", "error_description": description}),
    )
    token = await portal.csrf()
    r = await portal.client.post(
        "/login", data={"csrf_token": token, "step": "password", "email": "a@b.fr", "password": "x"}
    )
    assert r.status_code == 401 and french in r.text and 'role="alert"' in r.text


async def test_post_without_or_with_a_bad_csrf_token_is_403_and_calls_nothing(portal: PortalClient) -> None:
    await portal.login(PARTNER_ADMIN)
    request_id = "0196f3a0-0000-7000-8000-000000000001"
    posts = {
        "/logout": {},
        "/login": {"step": "password", "email": "a@b.fr", "password": "x"},
        "/activate": {"token": "t" * 32, "password": "long enough password", "confirmation": "same"},
        "/dossiers/consultation": {"numero": "1234567", "motif": "accompagnement_social"},
        "/dossiers/recherche": {"motif": "accompagnement_social", "family_name": "Martin"},
        "/demandes/nouvelle": {"family_name": "Petit", "profile": "T2"},
        f"/demandes/{request_id}/retrait": {},
        f"/instruction/{request_id}/decision": {"decision": "approve"},
    }
    for path, data in posts.items():
        for token in (None, "forged", csrf_of((await portal.client.get("/")).text) + "x"):
            body = data | ({"csrf_token": token} if token else {})
            r = await portal.client.post(path, data=body)
            assert r.status_code == 403, (path, token, r.status_code)
            assert "Le formulaire a expiré" in r.text
    upload = await portal.client.post(
        f"/demandes/{request_id}/pieces", files={"documents": ("c.pdf", b"%PDF-1.4", "application/pdf")}
    )
    assert upload.status_code == 403
    assert portal.fakes.calls == []  # nothing reached any service
    assert (await portal.client.get("/")).status_code == 200  # and the session is still there


async def test_a_csrf_token_of_another_session_is_refused(
    portal: PortalClient, make_portal: Callable[..., PortalClient]
) -> None:
    other = make_portal()
    foreign = await other.csrf()
    await portal.login(T1_USER)
    r = await portal.client.post(
        "/dossiers/consultation",
        data={"csrf_token": foreign, "numero": "1234567", "motif": "accompagnement_social"},
    )
    assert r.status_code == 403 and portal.fakes.calls == []
    await other.client.aclose()


async def test_an_expiring_access_token_is_refreshed_transparently(portal: PortalClient) -> None:
    await portal.login(T1_USER, ttl=10)  # within the 30 s margin: the next page refreshes first
    fresh = tokens(T1_USER, refresh="refresh-2")
    portal.fakes.on("identity", "POST", "/v1/token", httpx.Response(200, json=fresh))
    before = portal.client.cookies[COOKIE]
    r = await portal.client.get("/dossiers")
    assert r.status_code == 200
    [call] = portal.fakes.made("identity")
    assert call.form() == {"grant_type": "refresh_token", "refresh_token": "refresh-1"}
    assert portal.client.cookies[COOKIE] != before
    # The forms of pages opened before the refresh still work: same session id.
    assert csrf_of(r.text) == csrf_of((await portal.client.get("/dossiers")).text)


async def test_concurrent_pages_spend_the_refresh_token_once(portal: PortalClient) -> None:
    await portal.login(T1_USER, ttl=5)
    calls = 0

    def refresh(_request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json=tokens(T1_USER, refresh=f"refresh-{calls + 1}"))

    portal.fakes.on("identity", "POST", "/v1/token", refresh)
    pages = await asyncio.gather(*(portal.client.get("/dossiers") for _ in range(5)))
    assert all(p.status_code == 200 for p in pages)
    assert calls == 1  # a second use of refresh-1 would make identity revoke the whole family


async def test_an_upstream_401_is_retried_once_after_a_refresh(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    seen: list[str | None] = []

    def dossier(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if len(seen) == 1:
            return httpx.Response(401, json={"title": "Unauthorized", "status": 401})
        body = {"numero": "1234567", "department": "76", "policy_version": "v", "sections": {}}
        return httpx.Response(200, json=body, headers={"X-Audit-Id": "audit-1"})

    portal.fakes.on("dossiers", "GET", "/v1/dossiers/1234567", dossier)
    portal.fakes.on("identity", "POST", "/v1/token", httpx.Response(200, json=tokens(T1_USER, refresh="r2")))
    token = await portal.csrf("/dossiers")
    r = await portal.client.post(
        "/dossiers/consultation",
        data={"csrf_token": token, "numero": "1234567", "motif": "accompagnement_social"},
    )
    assert r.status_code == 200 and "audit-1" in r.text
    assert len(seen) == 2 and seen[0] != seen[1]


async def test_a_session_that_cannot_be_refreshed_is_logged_out_with_a_message(portal: PortalClient) -> None:
    await portal.login(T1_USER, ttl=-60)
    portal.fakes.on(
        "identity",
        "POST",
        "/v1/token",
        httpx.Response(
            400,
            json={"error": "invalid_grant", "error_description": "refresh token unknown, expired or revoked"},
        ),
    )
    r = await portal.client.get("/dossiers")
    assert r.status_code == 303 and r.headers["location"] == "/login?raison=expiree"
    assert portal.fakes.made("dossiers") == []
    login = await portal.client.get(r.headers["location"])
    assert login.status_code == 200 and "Votre session a expiré" in login.text
    # The cookie now holds an anonymous session: the next page asks to sign in again, without a refresh.
    portal.fakes.calls.clear()
    again = await portal.client.get("/dossiers")
    assert again.status_code == 303 and again.headers["location"].startswith("/login?suite=")
    assert portal.fakes.calls == []


@pytest.mark.parametrize("reason", ["suspended", "password_reset_required"])
async def test_a_session_whose_account_an_api_no_longer_honours_is_signed_out(
    portal: PortalClient, reason: str
) -> None:
    """Suspended or forced to reset while signed in: the first API call that refuses the account ends the
    session (its refresh tokens are already revoked), rather than its access token's expiry."""
    await portal.login(T1_USER)
    refusal = {"title": "Account suspended", "status": 403, "reason": reason}
    portal.fakes.on("dossiers", "GET", "/v1/dossiers/1234567", httpx.Response(403, json=refusal))
    token = await portal.csrf("/dossiers")
    r = await portal.client.post(
        "/dossiers/consultation",
        data={"csrf_token": token, "numero": "1234567", "motif": "accompagnement_social"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/login?raison=expiree"
    portal.fakes.calls.clear()
    again = await portal.client.get("/dossiers")
    assert again.status_code == 303 and again.headers["location"].startswith("/login?suite=")
    assert portal.fakes.calls == []


async def test_a_session_older_than_its_lifetime_is_logged_out(
    make_portal: Callable[..., PortalClient],
) -> None:
    portal = make_portal(portal_secret="a-test-secret-of-enough-length-0123456789")
    codec = SessionCodec(b"a-test-secret-of-enough-length-0123456789")
    old = Session(
        access_token=tokens(T1_USER)["access_token"], refresh_token="r", started_at=time.time() - 13 * 3600
    )
    portal.client.cookies.set(COOKIE, codec.encode(old))
    r = await portal.client.get("/dossiers")
    assert r.status_code == 303 and r.headers["location"] == "/login?raison=expiree"
    assert portal.fakes.calls == []
    await portal.client.aclose()


async def test_logout_forgets_the_tokens(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    token = await portal.csrf("/")
    r = await portal.client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/login?raison=deconnecte"
    assert (await portal.client.get("/")).status_code == 303


async def test_login_goes_back_only_to_a_local_page(portal: PortalClient) -> None:
    for suite, expected in (("/audit", "/audit"), ("//evil.example", "/"), ("https://evil.example", "/")):
        portal.client.cookies.clear()
        portal.fakes.on("identity", "POST", "/v1/token", httpx.Response(200, json=tokens(T1_USER)))
        token = await portal.csrf()
        r = await portal.client.post(
            "/login",
            data={
                "csrf_token": token,
                "step": "password",
                "email": "a@b.fr",
                "password": "x",
                "suite": suite,
            },
        )
        assert r.headers["location"] == expected


async def test_an_htmx_request_of_an_expired_session_reloads_the_whole_page(portal: PortalClient) -> None:
    await portal.login(T1_USER, ttl=-60)
    portal.fakes.on(
        "identity",
        "POST",
        "/v1/token",
        httpx.Response(400, json={"error": "invalid_grant", "error_description": "refresh token revoked"}),
    )
    r = await portal.client.get("/dossiers", headers={"HX-Request": "true"})
    # Not a redirect that htmx would follow and swap into the table: the whole page goes to the login.
    assert r.status_code == 200 and r.headers["hx-redirect"] == "/login?raison=expiree"
    portal.fakes.calls.clear()
    again = await portal.client.get("/dossiers")  # the tokens are gone: sign in again, no refresh tried
    assert again.status_code == 303 and again.headers["location"].startswith("/login?suite=")
    assert portal.fakes.calls == []
