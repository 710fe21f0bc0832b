"""Token verification: only an unexpired EdDSA token for our audience, signed by a published key, passes."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from cdap_shared.auth import CurrentPrincipal, Principal, TokenVerifier, require_roles
from cdap_shared.http import create_app
from cdap_shared.problems import Problem
from cdap_shared.standing import Fact


def public_jwk(key: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}


KEY, OTHER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
JWKS = {"keys": [public_jwk(KEY, "k1")]}


def token(key: Ed25519PrivateKey = KEY, kid: str = "k1", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "u1",
        "org": "o1",
        "roles": ["partner_user"],
        "aud": "cdap",
        "iss": "cdap-identity",
        "iat": now,
        "exp": now + 300,
        "jti": "j1",
        "grants": [{"id": "g1", "profile": "T1", "department": "76"}],
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(None, "cdap", "cdap-identity", keys=JWKS)


async def test_a_valid_token_gives_the_principal(verifier: TokenVerifier) -> None:
    p = await verifier.verify(token())
    assert p.sub == "u1" and p.org == "o1" and p.roles == {"partner_user"}
    assert p.grants[0].profile == "T1" and p.grants[0].department == "76"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: token(exp=int(time.time()) - 1), id="expired"),
        pytest.param(lambda: token(key=OTHER), id="other-key-same-kid"),
        pytest.param(lambda: token(key=OTHER, kid="k2"), id="unknown-kid"),
        pytest.param(lambda: token(aud="another-service"), id="wrong-audience"),
        pytest.param(lambda: token(iss="someone-else"), id="wrong-issuer"),
        pytest.param(lambda: token()[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(
            lambda: ".".join([_b64({"alg": "none", "kid": "k1"}), token().split(".")[1], ""]), id="alg-none"
        ),
        pytest.param(
            lambda: jwt.encode(
                {"sub": "u1", "aud": "cdap", "exp": int(time.time()) + 60},
                "k" * 32,
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            id="hs256-confusion",
        ),
        pytest.param(lambda: "not-a-token", id="garbage"),
    ],
)
async def test_bad_tokens_are_refused_with_401(verifier: TokenVerifier, bad: Any) -> None:
    with pytest.raises(Problem) as caught:
        await verifier.verify(bad())
    assert caught.value.status == 401


class Known:
    """A standing source holding the facts a test gives it."""

    def __init__(self, *facts: Fact) -> None:
        self.known = list(facts)

    async def facts(self, principal: Principal) -> list[Fact]:
        return self.known


def app_with(verifier: TokenVerifier, standing: Known | None = None) -> FastAPI:
    app = create_app(title="t")
    app.state.token_verifier = verifier
    app.state.standing = standing or Known()

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"sub": principal.sub}

    @app.get("/admin", dependencies=[require_roles("caf_admin")])
    async def admin() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def test_http_answers_are_problem_json(verifier: TokenVerifier) -> None:
    transport = ASGITransport(app=app_with(verifier))
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.get("/me", headers={"Authorization": f"Bearer {token()}"})
        assert ok.status_code == 200 and ok.json() == {"sub": "u1"}
        missing = await client.get("/me")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["title"] == "Unauthorized"
        forbidden = await client.get("/admin", headers={"Authorization": f"Bearer {token()}"})
        assert forbidden.status_code == 403 and forbidden.json()["reason"] == "role_not_allowed"
        unknown = await client.get("/nowhere")
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        assert (await client.get("/health")).json() == {"status": "ok"}


async def test_every_route_taking_a_token_refuses_a_caller_identity_no_longer_honours(
    verifier: TokenVerifier,
) -> None:
    suspended = Known(Fact("account", "u1", ("suspended",)))
    async with AsyncClient(
        transport=ASGITransport(app=app_with(verifier, suspended)), base_url="http://t"
    ) as c:
        for path in ("/me", "/admin"):
            refused = await c.get(path, headers={"Authorization": f"Bearer {token(roles=['caf_admin'])}"})
            assert refused.status_code == 403, path
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["reason"] == "suspended"
