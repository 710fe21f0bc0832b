"""Calls to the services' APIs. The portal shows what they answer and nothing else.

One `httpx.AsyncClient` (one connection pool) serves every upstream. Each call carries the current
W3C trace context, so a lookup made from the portal is one trace from the browser's request through
dossiers and Kafka into the audit entry.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.propagate import inject

from cdap_portal.config import Settings


@dataclass
class ApiError(Exception):
    """A 4xx/5xx answer (or no answer: status 503) from a service; `body` is its problem+json."""

    service: str
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.service} answered {self.status}")

    @property
    def reason(self) -> str | None:
        value = self.body.get("reason")
        return value if isinstance(value, str) else None


@dataclass
class OAuthFailure(Exception):
    """The token endpoint refused (RFC 6749): `error` and identity's `error_description`."""

    error: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # extension members, e.g. `enrolment_ticket`

    def __post_init__(self) -> None:
        super().__init__(self.error)


class Upstreams:
    """The services' base URLs and the shared HTTP client."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.urls = {
            "identity": settings.identity_url.rstrip("/"),
            "access": settings.access_requests_url.rstrip("/"),
            "dossiers": settings.dossiers_url.rstrip("/"),
            "audit": settings.audit_url.rstrip("/"),
        }
        self.http = httpx.AsyncClient(timeout=settings.upstream_timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(
        self,
        service: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request; a service that cannot be reached becomes an `ApiError` 503 (never a 500 page)."""
        sent: dict[str, str] = dict(headers or {})
        inject(sent)  # traceparent of the portal's current span
        if token:
            sent["Authorization"] = f"Bearer {token}"
        try:
            return await self.http.request(method, self.urls[service] + path, headers=sent, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(service, 503, {"title": "unreachable", "error_type": type(exc).__name__}) from exc

    async def open_stream(
        self, service: str, path: str, *, token: str | None, params: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        """A GET whose body is read as it comes (Server-Sent Events), without a read timeout; the caller
        closes it. An answer other than 200 is read, closed and raised as an `ApiError`."""
        sent = dict(headers)
        inject(sent)
        if token:
            sent["Authorization"] = f"Bearer {token}"
        timeout = httpx.Timeout(self.http.timeout.connect, read=None)
        request = self.http.build_request(
            "GET", self.urls[service] + path, params=params, headers=sent, timeout=timeout
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ApiError(service, 503, {"title": "unreachable", "error_type": type(exc).__name__}) from exc
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise ApiError(service, response.status_code, json_of(response), dict(response.headers))
        return response

    # ------------------------------------------------------------------ identity, without a session
    async def token(self, form: dict[str, str]) -> dict[str, Any]:
        """`POST /v1/token`; raises `OAuthFailure` with identity's error otherwise."""
        response = await self.send("identity", "POST", "/v1/token", data=form)
        body = json_of(response)
        if response.status_code == 200 and "access_token" in body:
            return body
        if response.status_code >= 500 or "error" not in body:
            raise ApiError("identity", response.status_code, body)
        raise OAuthFailure(str(body["error"]), str(body.get("error_description", "")), body)

    async def revoke(self, refresh_token: str) -> None:
        """RFC 7009 revocation of the session's refresh token family (logout); best effort."""
        # Identity unreachable: the cookie is forgotten anyway, and the family expires in days.
        with contextlib.suppress(ApiError):
            await self.send("identity", "POST", "/v1/revoke", data={"token": refresh_token})

    async def start_enrolment(self, ticket: str) -> dict[str, Any]:
        """`POST /v1/totp/enrolment`: the new TOTP secret, its otpauth URI and QR code (inline SVG)."""
        response = await self.send("identity", "POST", "/v1/totp/enrolment", json={"ticket": ticket})
        return checked("identity", response)

    async def confirm_enrolment(self, ticket: str, code: str) -> dict[str, Any]:
        """`POST /v1/totp/enrolment/confirm`: the first code enrols the secret; the answer is the tokens."""
        response = await self.send(
            "identity", "POST", "/v1/totp/enrolment/confirm", json={"ticket": ticket, "code": code}
        )
        return checked("identity", response)

    async def introspect(self, refresh_token: str) -> bool:
        """RFC 7662: is the sign-in session of this refresh token still alive at identity?"""
        response = await self.send("identity", "POST", "/v1/introspect", data={"token": refresh_token})
        return bool(checked("identity", response).get("active"))

    async def activate(self, token: str, password: str) -> dict[str, Any]:
        response = await self.send(
            "identity", "POST", "/v1/activations", json={"token": token, "password": password}
        )
        return checked("identity", response)


def json_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"items": body}


def checked(service: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 2xx answer; an `ApiError` otherwise."""
    if response.is_success:
        return json_of(response)
    raise ApiError(service, response.status_code, json_of(response), dict(response.headers))
