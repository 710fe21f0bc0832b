"""Kafka handlers of the CAF feed and of identity's events: the dossiers' read model and the grant projection.

`HANDLERS` is the table: event type -> a plain function taking the session, the settings, the event's
typed data and its time (`cdap_shared.consumer.EventHandler`); `handler(settings)` dispatches to it. Each
runs inside the consumer's transaction (with the inbox claim), so a redelivery changes nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_dossiers.config import Settings
from cdap_dossiers.domain import name_key, phone_key
from cdap_dossiers.models import Dossier, GrantRecord
from cdap_shared import events as ev
from cdap_shared import standing
from cdap_shared.consumer import EventHandler, Handler, dispatch


def _section(data: ev.DossierUpserted, name: str) -> dict[str, Any]:
    section = data.sections.get(name) or {}
    if not isinstance(section, dict):
        raise ValueError(f"sections.{name} is not an object")
    return section


def _text(section: dict[str, Any], path: str, key: str) -> str | None:
    """A field the read model indexes: a string or absent. Anything else is refused (the event goes to
    the DLQ) rather than stringified: `str(None)` made a family name "None", which a T3/T4 lookup with
    that family name would have matched (found by fuzzing)."""
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"sections.{path}.{key} is not a string")
    return value


def dossier_row(data: ev.DossierUpserted) -> dict[str, Any]:
    """The read model's row; raises `ValueError` when a field it indexes has the wrong shape."""
    identite = _section(data, "identite")
    family_name = _text(identite, "identite", "family_name") or ""
    birth = _text(identite, "identite", "birth_date")
    try:
        birth_date = date.fromisoformat(birth) if birth else None
    except ValueError:
        # Not chained: date's message repeats the value, a birth date, into the DLQ headers.
        raise ValueError("sections.identite.birth_date is not an ISO date") from None
    return {
        "numero": data.numero,
        "department": data.department,
        "version": data.version,
        "opposition": data.opposition,
        "landlord_siret": data.landlord_siret,
        "rsa_referent_siret": data.rsa_referent_siret,
        "nir": data.nir,
        "family_name": family_name,
        "given_name": _text(identite, "identite", "given_name") or "",
        "family_name_key": name_key(family_name),
        "birth_date": birth_date,
        "phone_key": phone_key(_text(_section(data, "contact"), "contact", "telephone")),
        "postal_code": _text(_section(data, "adresse"), "adresse", "postal_code"),
        "sections": data.sections,
    }


async def upsert_dossiers(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert or replace dossiers; an older or equal version never overwrites a newer one."""
    if not rows:
        return
    stmt = insert(Dossier).values(rows)
    columns = {c: stmt.excluded[c] for c in rows[0] if c != "numero"}
    table = Dossier.__table__  # type: ignore[attr-defined]
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["numero"], set_=columns, where=table.c.version < stmt.excluded.version
        )
    )


async def dossier_upserted(
    session: AsyncSession, settings: Settings, data: ev.DossierUpserted, at: datetime
) -> None:
    """The CAF sent a dossier, or a newer version of one."""
    await upsert_dossiers(session, [dossier_row(data)])


async def grant_issued(session: AsyncSession, settings: Settings, data: ev.GrantIssued, at: datetime) -> None:
    """Identity issued a grant: lookups in its department may use it (an ended grant stays ended)."""
    row = data.model_dump(include=set(GrantRecord.model_fields) - {"status"}) | {"status": "active"}
    stmt = insert(GrantRecord).values(row)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["grant_id"], set_={"status": stmt.excluded.status})
    )


async def grant_revoked(session: AsyncSession, settings: Settings, data: ev.GrantEnded, at: datetime) -> None:
    await _grant_ended(session, data, "revoked")


async def grant_expired(session: AsyncSession, settings: Settings, data: ev.GrantEnded, at: datetime) -> None:
    await _grant_ended(session, data, "expired")


async def _grant_ended(session: AsyncSession, data: ev.GrantEnded, status: str) -> None:
    await session.execute(
        update(GrantRecord).where(GrantRecord.grant_id == data.grant_id).values(status=status)  # type: ignore[arg-type]
    )


HANDLERS: dict[str, EventHandler[Settings]] = {
    "caf.dossier.upserted": dossier_upserted,
    "identity.grant.issued": grant_issued,
    "identity.grant.revoked": grant_revoked,
    "identity.grant.expired": grant_expired,
}


def handler(settings: Settings) -> Handler:
    """The consumer's handler: `HANDLERS` applied to the events it names, and every event given to the
    callers' standing (`cdap_shared.standing`)."""
    return dispatch(HANDLERS, settings, then=standing.apply)
