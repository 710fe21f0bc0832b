"""The floor for "read + record": a bare FastAPI endpoint doing one SELECT by key and one INSERT in one
transaction on the same database, with asyncpg directly. bench/lookup compares CDAP's lookup to it."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

DSN = os.environ["BENCH_FLOOR_DSN"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(DSN, min_size=10, max_size=20)
    async with app.state.pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS floor_consultation (id bigserial PRIMARY KEY, numero text, actor text, "
            "payload jsonb, created_at timestamptz DEFAULT now())"
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS floor_request (id bigserial PRIMARY KEY, payload jsonb, "
            "state text DEFAULT 'submitted', approvals int DEFAULT 0)"
        )
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/v1/dossiers/{numero}")
async def lookup(numero: str, motif: str, request: Request) -> JSONResponse:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT numero, department, sections FROM dossier WHERE numero = $1", numero
        )
        await conn.execute(
            "INSERT INTO floor_consultation (numero, actor, payload) VALUES ($1, $2, $3)",
            numero,
            request.headers.get("authorization", "")[-16:],
            json.dumps({"motif": motif}),
        )
    if row is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return JSONResponse(
        {"numero": row["numero"], "department": row["department"], "sections": json.loads(row["sections"])}
    )


@app.post("/v1/token")
async def bare_token(request: Request) -> JSONResponse:
    """The baseline of bench/identity: parse the form, answer JSON, no database, no signature."""
    form = await request.form()
    return JSONResponse({"access_token": str(form.get("client_id", "")), "token_type": "Bearer"})


@app.post("/v1/access-requests")
async def floor_submit(request: Request) -> JSONResponse:
    """The baseline of the access workflow: one INSERT per submission (bench/access)."""
    body = await request.json()
    async with request.app.state.pool.acquire() as conn:
        rid = await conn.fetchval(
            "INSERT INTO floor_request (payload) VALUES ($1) RETURNING id", json.dumps(body)
        )
    return JSONResponse({"id": str(rid), "state": "submitted"}, status_code=201)


@app.post("/v1/access-requests/{rid}/decisions")
async def floor_decide(rid: int, request: Request) -> JSONResponse:
    """One UPDATE per decision: the second approval makes the request approved."""
    await request.json()
    async with request.app.state.pool.acquire() as conn:
        state = await conn.fetchval(
            "UPDATE floor_request SET approvals = approvals + 1, state = CASE WHEN approvals >= 1 THEN "
            "'approved' ELSE 'awaiting_second_approval' END WHERE id = $1 RETURNING state",
            rid,
        )
    return JSONResponse({"id": str(rid), "state": state})
