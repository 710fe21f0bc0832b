"""The lookup use case: decide, record the consultation, and only then let the data out.

Every consultation — granted, denied, unknown or rate-limited — is staged in the outbox and committed
before the outcome is returned; if that commit fails, `NotRecorded` is raised and no data leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import orjson
from opentelemetry import trace

from cdap_dossiers import ratelimit
from cdap_dossiers.domain import ActiveGrant, DossierFacts, NotRecorded, decide, filtered_view
from cdap_dossiers.policy import Policy
from cdap_shared import outbox, standing
from cdap_shared.auth import Principal
from cdap_shared.clock import civil_today
from cdap_shared.envelope import new_event_id, structured_bytes
from cdap_shared.hotpool import HotPool

SOURCE = "/cdap/dossiers"
CONSULTED = "dossier.consulted"
# What a database outage raises on the plain asyncpg path: the consultation is then not recorded.
# InternalClientError: a connection whose server went away while it sat idle (asyncpg is left
# consuming the server's farewell); the next lookup on it fails, and the pool drops it.
OUTAGES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    client_ip: str | None
    lookup_limit: int  # calls per rate window (ratelimit.py)
    search_limit: int


Decision = Literal["granted", "denied", "not_found", "rate_limited"]


@dataclass
class Outcome:
    """A recorded consultation or search: its decision (the event's), the id of its record, the caller's
    rate, and the body only when granted."""

    decision: Decision
    audit_id: str
    rate: ratelimit.RateDecision
    body: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


# Everything a lookup decides on, in one round trip: the caller's call count in this second (bumped
# here: see ratelimit.py), what identity last said about its account, client and grants (the standing
# facts every other route reads in a statement of its own), its active grants (among those its token
# names), and the dossier (absent: NULL columns). Only constants are interpolated.
_LOOKUP = f"""
    WITH hit AS ({ratelimit.HIT.format(caller="$1", kind="'lookup'")})
    SELECT (SELECT calls FROM hit) AS calls,
           ARRAY(SELECT ROW(f.kind, f.subject, f.refusals::text[], f.holder, f.valid_from, f.valid_until)
                   FROM ({standing.FACTS}) AS f) AS facts,
           ARRAY(SELECT ROW(g.grant_id, g.profile, g.department, g.organisation_id, g.organisation_siret)
                   FROM grant_projection g
                  WHERE g.grant_id = ANY($2::text[]) AND g.status = 'active'
                    AND g.valid_from <= $4 AND g.valid_until >= $4) AS grants,
           d.numero, d.department, d.opposition, d.family_name, d.landlord_siret, d.rsa_referent_siret,
           d.sections::text AS sections
      FROM (SELECT 1) AS one LEFT JOIN dossier d ON d.numero = $3
"""  # noqa: S608


async def prepare(conn: asyncpg.Connection) -> None:
    """Ready a new lookup connection (`HotPool`'s `prepare`): the lookup's read runs once in a
    transaction rolled back, so it is parsed, described and kept (asyncpg's statement cache) and the
    server has read what it touches, yet nothing is counted. (`outbox.prepare_group_append` readies the
    record's connection.)"""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.fetchrow(_LOOKUP, "", [], "", civil_today())
    finally:
        await transaction.rollback()


def _consultation(
    caller: Caller,
    numero: str,
    motif: str,
    grant: ActiveGrant | None,
    policy: Policy,
    decision: Decision,
    *,
    reason: str | None = None,
    sections: list[str] | None = None,
) -> outbox.Staged:
    """The consultation's outbox row, for `GroupAppend.append` (its first field is the event id).

    The event (`ev.DossierConsulted` in its envelope) is serialised with `envelope.structured_bytes`
    rather than through the models, which cost a lookup about a tenth of its CPU; `test_lookups` checks
    that it is byte for byte what the models write."""
    span = trace.get_current_span().get_span_context()
    event_id = new_event_id()
    data = {
        "actor": caller.principal.sub,
        "organisation_id": caller.principal.org,
        "profile": grant.profile if grant else None,
        "grant_id": grant.id if grant else None,
        "motif": motif,
        "decision": decision,
        "reason": reason,
        "policy_version": policy.version,
        "client_ip": caller.client_ip,
        "trace_id": f"{span.trace_id:032x}" if span.is_valid else None,
        "numero": numero,
        "sections": sections or [],
    }
    payload = structured_bytes(event_id, CONSULTED, SOURCE, numero, data)
    return outbox.Staged(event_id, CONSULTED, numero, payload, outbox.span_headers(span))


@dataclass(frozen=True)
class Lookups:
    """What a lookup writes and reads with: its connections (`pool`, to read) and the outbox rows of
    concurrent lookups appended together (`records`, on a connection of its own)."""

    pool: HotPool
    records: outbox.GroupAppend


async def lookup(
    lookups: Lookups, policy: Policy, caller: Caller, numero: str, motif: str, family_name: str | None
) -> Outcome:
    """One consultation of one dossier, recorded whatever its outcome (plain asyncpg: the hot path).

    Two statements: the read (which counts the call), then the record, appended with those of the
    lookups running meanwhile (`GroupAppend`). The caller's standing is judged from facts the read
    brings, as `CurrentPrincipal` judges it elsewhere; the outcome is returned only once the record has
    committed. Raises `NotRecorded` if it cannot be."""
    try:
        async with lookups.pool.acquire() as conn:
            outcome, staged = await _decide(conn, policy, caller, numero, motif, family_name)
        # The read's connection is back in the pool: the record waits for its batch, not for a connection.
        await lookups.records.append(staged)
    except OUTAGES as exc:
        raise NotRecorded from exc
    # The record has committed: only now may the data leave.
    return outcome


async def _decide(
    conn: asyncpg.Connection,
    policy: Policy,
    caller: Caller,
    numero: str,
    motif: str,
    family_name: str | None,
) -> tuple[Outcome, outbox.Staged]:
    """The read and the decision: the outcome (its body not to leave before its record has committed)."""
    today = civil_today()
    principal = caller.principal
    row = await conn.fetchrow(_LOOKUP, principal.sub, [g.id for g in principal.grants], numero, today)
    assert row is not None
    rate = ratelimit.RateDecision("lookup", caller.lookup_limit, row["calls"])
    try:
        judged = standing.judge(principal, [standing.Fact.of(f) for f in row["facts"]], today)
    except standing.NotInGoodStanding as refusal:
        return _refused(policy, caller, numero, motif, rate, refusal.reason, "denied")
    if not rate.allowed:
        return _refused(policy, caller, numero, motif, rate, "rate_limited", "rate_limited")
    if row["numero"] is None:
        return _refused(policy, caller, numero, motif, rate, "unknown_numero", "not_found")
    live = {g.id for g in judged.grants}
    grants = [ActiveGrant(*g) for g in row["grants"] if g[0] in live]
    facts = DossierFacts(
        numero=row["numero"],
        department=row["department"],
        opposition=row["opposition"],
        family_name=row["family_name"],
        landlord_siret=row["landlord_siret"],
        rsa_referent_siret=row["rsa_referent_siret"],
    )
    verdict = decide(policy, grants, facts, motif, family_name=family_name)
    if verdict.decision == "denied":
        staged = _consultation(caller, numero, motif, verdict.grant, policy, "denied", reason=verdict.reason)
        return Outcome("denied", staged.event_id, rate, reason=verdict.reason), staged
    view = filtered_view(orjson.loads(row["sections"]), verdict.sections)
    staged = _consultation(caller, numero, motif, verdict.grant, policy, "granted", sections=sorted(view))
    body = {
        "numero": numero,
        "department": row["department"],
        "policy_version": policy.version,
        "sections": view,
    }
    return Outcome("granted", staged.event_id, rate, body), staged


def _refused(
    policy: Policy,
    caller: Caller,
    numero: str,
    motif: str,
    rate: ratelimit.RateDecision,
    reason: str,
    decision: Decision,
) -> tuple[Outcome, outbox.Staged]:
    """A lookup refused before any grant was weighed (standing, rate, unknown numero)."""
    staged = _consultation(caller, numero, motif, None, policy, decision, reason=reason)
    return Outcome(decision, staged.event_id, rate, reason=reason), staged
