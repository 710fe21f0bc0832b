"""A service's domain errors become problem+json through one table, the nearest class winning."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from cdap_shared.problems import PROBLEM_JSON, install_error_table, install_problem_handlers


class Refused(Exception):
    def __init__(self, reason: str, detail: str, **members: object) -> None:
        super().__init__(detail)
        self.reason = reason
        self.members = members


class NotNow(Refused):
    pass


class Closed(NotNow):
    pass


class TooBig(Refused):
    pass


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_error_table(app, {NotNow: (409, "Conflict"), TooBig: (413, "Too large")})
    errors = {
        "closed": Closed("request_closed", "The request is closed."),
        "big": TooBig("too_big", "Over the limit.", limit=10),
        "unmapped": Refused("anything", "Not in the table."),
    }

    @app.get("/{which}")
    async def fail(which: str) -> None:
        raise errors[which]

    return app


async def test_each_error_gets_its_nearest_class_status_with_its_reason_and_detail() -> None:
    async with AsyncClient(transport=ASGITransport(app=_app()), base_url="http://t") as client:
        closed, big = await client.get("/closed"), await client.get("/big")
    assert closed.status_code == 409 and closed.headers["content-type"] == PROBLEM_JSON
    assert closed.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "The request is closed.",
        "instance": "/closed",
        "reason": "request_closed",
    }
    assert (big.status_code, big.json()["title"], big.json()["reason"]) == (413, "Too large", "too_big")
    assert big.json()["limit"] == 10  # an error's members are members of its problem


async def test_an_error_the_table_does_not_name_stays_an_internal_error() -> None:
    transport = ASGITransport(app=_app(), raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/unmapped")
    assert r.status_code == 500 and "Not in the table" not in r.text
