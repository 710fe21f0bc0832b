"""Kafka handlers of the audit service, both consumers in one place.

- The **ingestion** (`ingestion(settings, rules)`, group `<group>`): every event of the four topics
  it reads becomes a log entry, batch by batch, and may raise alerts (`ingest.Ingestor`).
- The **directory** (`handler(settings)`, group `<group>-directory`, on `identity.events` only):
  who the ids of the log are, read by `directory.py`. `HANDLERS` is its table: event type -> a plain
  function taking the session, the settings, the event's typed data and its time
  (`cdap_shared.consumer.EventHandler`). It has its own
  group so the ingestion's batches never wait for it, and needs no inbox: each event sets a row to
  what identity said last, and one subject's events keep their order (same key), so a redelivery
  replays them to the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit.config import Settings
from cdap_audit.directory import ORGANISATION, PERSON
from cdap_audit.ingest import Ingestor
from cdap_audit.rules import RuleSet
from cdap_shared import events as ev
from cdap_shared.consumer import EventHandler, Handler, dispatch


def ingestion(settings: Settings, rules: RuleSet, on_commit: Callable[[], None] | None = None) -> Ingestor:
    """The ingestion's batch handler; with an OTLP endpoint, each entry's trace continues in audit.
    `on_commit` is called once each batch's entries are committed."""
    return Ingestor(
        rules, settings.alerts_topic, traced=settings.otlp_endpoint is not None, on_commit=on_commit
    )


def display_name(data: ev.UserProvisioned) -> str | None:
    """ "Given Family" as identity has it, or None for an event published before names were sent."""
    parts = [p.strip() for p in (data.given_name, data.family_name) if p and p.strip()]
    return " ".join(parts) or None


async def user_provisioned(
    session: AsyncSession, settings: Settings, data: ev.UserProvisioned, at: datetime
) -> None:
    """An account's latest description: name, e-mail, organisation, department, roles."""
    row = {
        "user_id": data.user_id,
        "display_name": display_name(data),
        "email": data.email,
        "organisation_id": data.organisation_id,
        "department": data.department,
        "roles": sorted(data.roles),
    }
    stmt = pg_insert(PERSON).values(row)
    changed: dict[str, Any] = {k: stmt.excluded[k] for k in row if k != "user_id"}
    # An older event without names must not erase the ones a newer one brought.
    for kept in ("display_name", "email"):
        changed[kept] = func.coalesce(stmt.excluded[kept], PERSON.c[kept])
    await session.execute(stmt.on_conflict_do_update(index_elements=["user_id"], set_=changed))


async def organisation_registered(
    session: AsyncSession, settings: Settings, data: ev.OrganisationRegistered, at: datetime
) -> None:
    """An organisation's latest name and department."""
    row = {"organisation_id": data.organisation_id, "name": data.name, "department": data.department}
    stmt = pg_insert(ORGANISATION).values(row)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["organisation_id"],
            set_={"name": stmt.excluded.name, "department": stmt.excluded.department},
        )
    )


HANDLERS: dict[str, EventHandler[Settings]] = {
    "identity.user.provisioned": user_provisioned,
    "identity.organisation.registered": organisation_registered,
    "identity.organisation.updated": organisation_registered,
}


def handler(settings: Settings) -> Handler:
    """The directory consumer's handler: `HANDLERS` applied to the events it names."""
    return dispatch(HANDLERS, settings)
