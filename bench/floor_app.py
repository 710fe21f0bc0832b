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
