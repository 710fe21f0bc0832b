"""Routes of the log's entries (auditor role only): the list, one entry, a dossier's consultations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from cdap_audit import queries
from cdap_audit.queries import EntryFilter
from cdap_audit.schemas import EntryItem, EntryPage
from cdap_audit.web import ERRORS, MAX_POSITION, Cursor, Filters, Limit, OrderQuery, cursor_position
from cdap_shared.auth import require_roles
from cdap_shared.db import SessionDep

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[require_roles("auditor")])

Numero = Annotated[str, Path(pattern=r"^\d{7}$", description="numéro allocataire (7 digits)")]


@router.get("/entries", response_model=EntryPage, responses=ERRORS)
async def list_entries(
    session: SessionDep,
    where: Filters,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = "asc",
) -> dict[str, Any]:
    """Log entries matching every filter given, by position; `leaf` holds the exact hashed bytes."""
    return (await queries.entries(session, where, cursor_position(cursor), limit, order)).body()


@router.get("/entries/{index}", response_model=EntryItem, responses={**ERRORS, 404: {}})
async def get_entry(
    index: Annotated[int, Path(ge=0, le=MAX_POSITION)], session: SessionDep
) -> dict[str, Any]:
    """One entry by its leaf position (404 if beyond the tree or purged by retention)."""
    return await queries.entry_at(session, index)


@router.get("/dossiers/{numero}/consultations", response_model=EntryPage, responses=ERRORS)
async def dossier_consultations(
    numero: Numero, session: SessionDep, cursor: Cursor = None, limit: Limit = 100, order: OrderQuery = "asc"
) -> dict[str, Any]:
    """Who consulted this dossier (granted, denied, rate-limited and unknown-numero lookups)."""
    where = EntryFilter(dossier=numero)
    return (await queries.entries(session, where, cursor_position(cursor), limit, order)).body()
