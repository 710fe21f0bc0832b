"""Routes of signed checkpoints: the latest, the latest witnessed, the key that checks them (auditor
role only), and the witnesses' cosignatures (`witness_router`, no account: see there)."""

from __future__ import annotations

import base64
import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from cdap_audit import signing
from cdap_audit.models import CheckpointRecord
from cdap_audit.schemas import CheckpointBody
from cdap_audit.web import ERRORS, Ctx, wants_json
from cdap_shared.auth import require_roles
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[require_roles("auditor")])

KEY_NAME = re.compile(r"[^\s+\x00-\x1f\x7f]{1,200}")  # signed-note key names
WitnessName = Annotated[list[str] | None, Query(max_length=10, description="key names of witnesses")]
CHECKPOINT_ANSWERS = {**ERRORS, 404: {}, 200: {"content": {"text/plain": {}}}}


def _checkpoint(request: Request, record: CheckpointRecord) -> Response:
    """The C2SP signed note as text, or JSON with `Accept: application/json`."""
    if wants_json(request):
        body = CheckpointBody(
            origin=record.origin,
            tree_size=record.tree_size,
            root_hash=base64.b64encode(record.root_hash).decode(),
            note=record.note,
        )
        return JSONResponse(body.model_dump())
    return PlainTextResponse(record.note)


@router.get("/checkpoints/latest", response_model=CheckpointBody, responses=CHECKPOINT_ANSWERS)
async def latest_checkpoint(request: Request, session: SessionDep) -> Response:
    """The newest signed checkpoint: the C2SP signed note as text, or JSON with `Accept: application/json`."""
    return _checkpoint(request, await signing.current(session))


@router.get("/checkpoints/witnessed", response_model=CheckpointBody, responses=CHECKPOINT_ANSWERS)
async def witnessed_checkpoint(
    request: Request, ctx: Ctx, session: SessionDep, witness: WitnessName = None
) -> Response:
    """The newest checkpoint cosigned by every `witness` named (default: by any configured witness)."""
    if witness and not all(KEY_NAME.fullmatch(name) for name in witness):
        raise Problem(400, "Invalid witness name", "A key name has no spaces, '+' or control characters.")
    return _checkpoint(request, await signing.witnessed(session, ctx.witnesses, witness))


@router.get("/checkpoints/key", responses={**ERRORS, 200: {"content": {"text/plain": {}}}})
async def checkpoint_key(request: Request, ctx: Ctx) -> Response:
    """The note verifier key `<name>+<key id>+<base64 key>` that checks every checkpoint."""
    key = await ctx.key.verifier_key()
    return JSONResponse({"key": key}) if wants_json(request) else PlainTextResponse(key + "\n")


# Witnesses have no account: a cosignature by a key of `CDAP_AUDIT_WITNESS_KEYS` is what authenticates
# them, and all they can do is add such a line to a checkpoint signed here.
witness_router = APIRouter(prefix="/v1", tags=["audit"])


# A checkpoint as served (origin, tree size, root hash, the log's signature) with a witness's cosignature.
COSIGNED_NOTE = (
    "cdap.audit/compose\n1024\nKgKpjlqSmJ8Z0o8Tq3l9o6QkRkKq5P0n0UQz3wA2eXY=\n\n"
    "\u2014 cdap.audit/compose 3Fq1dQAAAAGZk0v9m3d6q1b2YxTn0wq4A0P7q2n8mZ6s8k1cQ9tH5r0xL2u3Yg==\n"
    "\u2014 witness.caf.example 7cC2bQAAAABnTQ7fq9k2m4ZB1bX3hJ6s0o9lV2cR8yT4wE5uI7pK0aN3dF6gH1jS2qW==\n"
)


@witness_router.post(
    "/checkpoints/cosignatures",
    responses={400: {}, 403: {}, 404: {}, 413: {}, 200: {"content": {"text/plain": {}}}},
    openapi_extra={"requestBody": {"content": {"text/plain": {"example": COSIGNED_NOTE}}, "required": True}},
)
async def add_cosignatures(request: Request, ctx: Ctx) -> Response:
    """A witness submits a checkpoint signed here with its cosignature line(s); answers the note as served."""
    try:
        note = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, "Not a signed note", "The body is not UTF-8 text.") from exc
    return PlainTextResponse(await signing.add_cosignatures(ctx.sessions, note, ctx.witnesses))
