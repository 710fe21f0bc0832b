"""The app factory: readiness reflects dependencies; unexpected errors leak nothing."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Depends, Request
from httpx import ASGITransport, AsyncClient
from pydantic import BaseModel

from cdap_shared.bodylimit import max_body
from cdap_shared.http import create_app
from cdap_shared.problems import Problem
from cdap_shared.telemetry import mask


async def test_ready_is_503_when_a_dependency_is_down() -> None:
    async def db_ok() -> None:
        return None

    async def kafka_down() -> None:
        raise ConnectionError("refused")

    app = create_app(title="t", ready_checks={"database": db_ok, "kafka": kafka_down})
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json()["failed"] == {"kafka": "ConnectionError"}


class Body(BaseModel):
    count: int


async def test_validation_errors_and_crashes_are_problem_json_without_internals() -> None:
    app = create_app(title="t")

    @app.post("/things")
    async def things(body: Body) -> dict[str, int]:
        return {"count": body.count}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail at /srv/app.py line 12")

    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        bad = await client.post("/things", json={"count": "many"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["errors"][0]["loc"] == ["body", "count"]
        crash = await client.get("/boom")
        assert crash.status_code == 500
        assert "secret" not in crash.text and "Traceback" not in crash.text
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200 and "python_info" in metrics.text


def test_nir_and_phone_numbers_are_masked_in_logs(capsys: object) -> None:
    import structlog

    from cdap_shared.telemetry import configure_logging

    configure_logging("test")
    structlog.get_logger().info(
        "lookup by 1 85 05 78 006 084 36 and 185057800608436 from 06 12 34 56 78",
        phone="+33612345678",
        password="hunter2hunter2",
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]  # type: ignore[attr-defined]
    record = json.loads(line)
    assert "185057800608436" not in line and "006 084" not in line
    assert "12 34 56" not in line and "612345678" not in line and "hunter2" not in line
    assert record["service"] == "test"
    assert mask("dossier 1234567") == "dossier 1234567"  # a numero allocataire is not a NIR


async def test_a_value_postgresql_cannot_store_is_a_422_not_a_500(database_url: str) -> None:
    import asyncpg

    from cdap_shared.db import asyncpg_dsn

    app = create_app(title="t")

    @app.get("/store")
    async def store(value: str) -> dict[str, str]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return {"stored": await conn.fetchval("SELECT $1::text", value)}
        finally:
            await conn.close()

    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/store", params={"value": "abc"})).json() == {"stored": "abc"}
        nul = await client.get("/store", params={"value": "a\x00b"})  # PostgreSQL refuses NUL in text
        assert nul.status_code == 422 and nul.headers["content-type"] == "application/problem+json"


def _limited_app() -> Any:
    app = create_app(title="t")
    seen: list[int] = []

    async def needs_token(request: Request) -> None:
        if "authorization" not in request.headers:
            raise Problem(401, "Unauthorized")

    @app.post("/things", dependencies=[Depends(needs_token)])
    async def things(body: Body) -> dict[str, int]:
        seen.append(body.count)
        return {"count": body.count}

    @app.post("/uploads", openapi_extra=max_body(200 * 1024))
    async def uploads(request: Request) -> dict[str, int]:
        size = len(await request.body())
        seen.append(size)
        return {"size": size}

    app.state.seen = seen
    return app


async def test_a_body_over_the_route_maximum_is_refused_413_before_it_is_read() -> None:
    app = _limited_app()
    big = json.dumps({"count": 1, "pad": "x" * 70_000}).encode()

    async def streamed() -> Any:  # no Content-Length: the size is only known as it arrives
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        as_json = {"content-type": "application/json"}
        declared = await client.post("/things", content=big, headers=as_json)
        chunked = await client.post("/things", content=streamed(), headers=as_json)
        small = await client.post("/things", json={"count": 2}, headers={"authorization": "x"})
        upload_ok = await client.post("/uploads", content=b"%" * 150_000)
        upload_too_big = await client.post("/uploads", content=b"%" * 250_000)
    for refused in (declared, chunked, upload_too_big):
        assert refused.status_code == 413, refused.text  # not 401: refused before authentication
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["reason"] == "body_too_large"
    assert small.status_code == 200 and upload_ok.json() == {"size": 150_000}
    assert app.state.seen == [2, 150_000]  # the refused bodies never reached a route
    assert app.openapi()["paths"]["/uploads"]["post"]["x-max-body-bytes"] == 200 * 1024
    assert "413" in app.openapi()["paths"]["/things"]["post"]["responses"]
