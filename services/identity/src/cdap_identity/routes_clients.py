"""Routes of partner-system clients: create, list, rotate the secret, disable, delete."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response

from cdap_identity import habilitations, queries
from cdap_identity.schemas import ClientCreate, ClientCreated, ClientPublic, ClientRotated, Reason
from cdap_identity.web import Config, Id, write
from cdap_shared.auth import CurrentActor
from cdap_shared.db import SessionDep

router = APIRouter(tags=["grants"])


@router.post(
    "/v1/clients", status_code=201, response_model=ClientCreated, responses={403: {}, 404: {}, 409: {}}
)
async def create_client(body: ClientCreate, session: SessionDep, actor: CurrentActor) -> ClientCreated:
    """A partner system's credentials bound to one active grant of the caller's organisation, whose
    holder is not suspended. The secret is shown once."""
    opened = habilitations.open_client(session, actor, body.grant_id, body.name)
    client, secret = await write(session, opened)
    return ClientCreated(client_id=client.id, client_secret=secret, grant_id=client.grant_id)


@router.get("/v1/clients", response_model=list[ClientPublic], responses={403: {}})
async def list_clients(
    session: SessionDep,
    actor: CurrentActor,
    organisation: Annotated[str, Query(min_length=1, max_length=64)],
) -> list[ClientPublic]:
    """An organisation's partner systems (never their secrets)."""
    return await queries.clients(session, actor, organisation)


@router.post(
    "/v1/clients/{client_id}/rotate", response_model=ClientRotated, responses={403: {}, 404: {}, 409: {}}
)
async def rotate_client(
    client_id: Id, config: Config, session: SessionDep, actor: CurrentActor
) -> ClientRotated:
    """A new secret, shown once; the previous one works on for the configured overlap (0 by default)."""
    overlap = timedelta(seconds=config.client_secret_overlap_seconds)
    client, secret = await write(session, habilitations.rotate(session, actor, client_id, overlap))
    return ClientRotated(
        client_id=client.id,
        client_secret=secret,
        grant_id=client.grant_id,
        previous_secret_valid_until=client.previous_secret_until,
    )


@router.post("/v1/clients/{client_id}/disable", response_model=ClientPublic, responses={403: {}, 404: {}})
async def disable_client(
    client_id: Id, session: SessionDep, actor: CurrentActor, body: Reason | None = None
) -> ClientPublic:
    """Stop the partner system now: new tokens are refused, and current ones within seconds."""
    reason = body.reason if body else None
    return queries.client_view(await write(session, habilitations.disable(session, actor, client_id, reason)))


@router.delete("/v1/clients/{client_id}", status_code=204, responses={403: {}, 404: {}})
async def delete_client(client_id: Id, session: SessionDep, actor: CurrentActor) -> Response:
    """Forget the partner system; its tokens are refused within seconds."""
    await write(session, habilitations.delete(session, actor, client_id))
    return Response(status_code=204)
