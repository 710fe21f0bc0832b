"""Service functions behind the HTTP routes: decide, record the consultation, and only then answer.

Every consultation — granted, denied, unknown or rate-limited — is staged in the outbox and committed
before the response is built; if that commit fails, the caller gets a 503 and no data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import asyncpg
from sqlalchemy import and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_dossiers.domain import ActiveGrant, DossierFacts, Verdict, decide, filtered_view, name_key
from cdap_dossiers.models import Dossier, GrantRecord
from cdap_dossiers.policy import Policy
from cdap_dossiers.projections import phone_key
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.auth import Principal
from cdap_shared.clock import civil_today
from cdap_shared.envelope import CloudEvent
from cdap_shared.standing import ACCOUNT, Standing
from cdap_shared.telemetry import current_trace_id

SOURCE = "/cdap/dossiers"
MAX_SEARCH_RESULTS = 20


@dataclass(frozen=True)
class Caller:
    principal: Principal
    client_ip: str | None


@dataclass
class Outcome:
    """What the route answers: an HTTP status, a body, and the id of the recorded consultation."""

    status: int
    audit_id: str
    body: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


async def active_grants(session: AsyncSession, principal: Principal) -> tuple[list[ActiveGrant], bool]:
    """The caller's token grants that the projection still holds active today, and whether it is suspended."""
    today = civil_today()
    ids = [g.id for g in principal.grants]
    rows = (
        (
            await session.execute(
                select(GrantRecord).where(
                    col(GrantRecord.grant_id).in_(ids),
                    col(GrantRecord.status) == "active",
                    col(GrantRecord.valid_from) <= today,
                    col(GrantRecord.valid_until) >= today,
                )
            )
        )
        .scalars()
        .all()
        if ids
        else []
    )
    account = await session.get(Standing, (ACCOUNT, principal.sub))
    grants = [
        ActiveGrant(r.grant_id, r.profile, r.department, r.organisation_id, r.organisation_siret)
        for r in rows
    ]
    return grants, bool(account and "suspended" in account.refusals)


# Everything a lookup decides on, in one round trip: the caller's active grants (among those its token
# names), its suspension, and the dossier (absent: NULL columns).
_LOOKUP = """
    SELECT d.numero, d.department, d.opposition, d.family_name, d.landlord_siret, d.rsa_referent_siret,
           d.sections::text AS sections,
           (SELECT coalesce(json_agg(json_build_array(g.grant_id, g.profile, g.department, g.organisation_id,
                                                      g.organisation_siret)), '[]')::text
              FROM grant_projection g
             WHERE g.grant_id = ANY($1::text[]) AND g.status = 'active'
               AND g.valid_from <= $4 AND g.valid_until >= $4) AS grants,
           coalesce((SELECT 'suspended' = ANY(refusals) FROM standing
                      WHERE kind = 'account' AND subject = $2), false) AS suspended
      FROM (SELECT 1) AS one LEFT JOIN dossier d ON d.numero = $3
"""


async def _record(session: AsyncSession, event: CloudEvent) -> str:
    await outbox.add(session, event)
    await session.commit()
    return event.id


def _consulted(
    caller: Caller, numero: str, motif: str, verdict: Verdict | None, policy: Policy, **kw: Any
) -> CloudEvent:
    grant = verdict.grant if verdict else None
    data = ev.DossierConsulted(
        actor=caller.principal.sub,
        organisation_id=caller.principal.org,
        profile=grant.profile if grant else None,
        grant_id=grant.id if grant else None,
        numero=numero,
        motif=motif,
        policy_version=policy.version,
        client_ip=caller.client_ip,
        trace_id=current_trace_id(),
        **kw,
    )
    return ev.make_event("dossier.consulted", source=SOURCE, subject=numero, data=data)


async def lookup(
    pool: asyncpg.Pool, policy: Policy, caller: Caller, numero: str, motif: str, family_name: str | None
) -> Outcome:
    """One consultation of one dossier, recorded whatever its outcome (plain asyncpg: the hot path)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            _LOOKUP, [g.id for g in caller.principal.grants], caller.principal.sub, numero, civil_today()
        )
        assert row is not None
        grants = [ActiveGrant(*g) for g in json.loads(row["grants"])]
        if row["numero"] is None:
            event = _consulted(
                caller, numero, motif, None, policy, decision="not_found", reason="unknown_numero"
            )
            return Outcome(404, await outbox.add_pg(conn, event), reason="unknown_numero")
        facts = DossierFacts(
            numero=row["numero"],
            department=row["department"],
            opposition=row["opposition"],
            family_name=row["family_name"],
            landlord_siret=row["landlord_siret"],
            rsa_referent_siret=row["rsa_referent_siret"],
        )
        verdict = decide(policy, grants, facts, motif, family_name=family_name, suspended=row["suspended"])
        if verdict.decision == "denied":
            event = _consulted(
                caller, numero, motif, verdict, policy, decision="denied", reason=verdict.reason
            )
            return Outcome(403, await outbox.add_pg(conn, event), reason=verdict.reason)
        view = filtered_view(json.loads(row["sections"]), verdict.sections)
        event = _consulted(caller, numero, motif, verdict, policy, decision="granted", sections=sorted(view))
        audit_id = await outbox.add_pg(conn, event)
    # The transaction has committed: only now may the data leave.
    body = {
        "numero": numero,
        "department": row["department"],
        "policy_version": policy.version,
        "sections": view,
    }
    return Outcome(200, audit_id, body)


async def record_rate_limited(
    pool: asyncpg.Pool, policy: Policy, caller: Caller, numero: str, motif: str
) -> str:
    event = _consulted(caller, numero, motif, None, policy, decision="rate_limited", reason="rate_limited")
    async with pool.acquire() as conn, conn.transaction():
        return await outbox.add_pg(conn, event)


async def record_refusal(
    pool: asyncpg.Pool, policy: Policy, caller: Caller, reason: str, numero: str | None, motif: str | None
) -> str:
    """A caller identity no longer honours (suspended, client disabled...), refused before its lookup
    (`numero` given) or search: recorded as a denied consultation all the same."""
    if numero is not None:
        event = _consulted(caller, numero, motif or "", None, policy, decision="denied", reason=reason)
    else:
        data = ev.DossierSearched(
            actor=caller.principal.sub,
            organisation_id=caller.principal.org,
            motif=motif,
            criteria=[],
            decision="denied",
            reason=reason,
            policy_version=policy.version,
            client_ip=caller.client_ip,
            trace_id=current_trace_id(),
        )
        event = ev.make_event("dossier.searched", source=SOURCE, subject=caller.principal.sub, data=data)
    async with pool.acquire() as conn, conn.transaction():
        return await outbox.add_pg(conn, event)


@dataclass(frozen=True)
class SearchCriteria:
    motif: str
    nir: str | None = None
    family_name: str | None = None
    birth_date: date | None = None
    telephone: str | None = None
    postal_code: str | None = None

    def used(self) -> list[str]:
        """Which criteria were given (their names only: values such as a NIR are never recorded)."""
        names = ("nir", "family_name", "birth_date", "telephone", "postal_code")
        return [n for n in names if getattr(self, n) is not None]


def _scope_clause(policy: Policy, grant: ActiveGrant) -> Any:
    profile = policy.profiles[grant.profile]
    table = Dossier.__table__.c  # type: ignore[attr-defined]
    clauses = [table.department == grant.department]
    if profile.scope == "landlord":
        clauses.append(table.landlord_siret == grant.organisation_siret)
    elif profile.scope == "rsa":
        clauses.append(table.rsa_referent_siret == grant.organisation_siret)
    if profile.opposition:
        clauses.append(table.opposition.is_(False))
    return and_(*clauses)


async def search(session: AsyncSession, policy: Policy, caller: Caller, criteria: SearchCriteria) -> Outcome:
    """Minimal matches (numero, names) inside the caller's scope only; recorded as `dossier.searched`."""
    grants, suspended = await active_grants(session, caller.principal)
    usable = [
        g
        for g in grants
        if g.profile in policy.profiles
        and policy.profiles[g.profile].searchable
        and criteria.motif in policy.profiles[g.profile].motifs
    ]
    reason = "suspended" if suspended else None if usable else "motif_not_allowed"
    matches: list[dict[str, str]] = []
    if reason is None:
        table = Dossier.__table__.c  # type: ignore[attr-defined]
        where = [or_(*[_scope_clause(policy, g) for g in usable]) if usable else false()]
        if criteria.nir:
            where.append(table.nir == criteria.nir.replace(" ", "").upper())
        if criteria.family_name:
            where.append(table.family_name_key == name_key(criteria.family_name))
        if criteria.birth_date:
            where.append(table.birth_date == criteria.birth_date)
        if criteria.telephone:
            where.append(table.phone_key == phone_key(criteria.telephone))
        if criteria.postal_code:
            where.append(table.postal_code == criteria.postal_code)
        rows = await session.execute(
            select(table.numero, table.family_name, table.given_name)
            .where(*where)
            .order_by(table.numero)
            .limit(MAX_SEARCH_RESULTS)
        )
        matches = [{"numero": n, "family_name": f, "given_name": g} for n, f, g in rows.all()]
    grant = usable[0] if usable else None
    data = ev.DossierSearched(
        actor=caller.principal.sub,
        organisation_id=caller.principal.org,
        profile=grant.profile if grant else None,
        grant_id=grant.id if grant else None,
        motif=criteria.motif,
        criteria=criteria.used(),
        decision="denied" if reason else "granted",
        reason=reason,
        numeros=[m["numero"] for m in matches],
        policy_version=policy.version,
        client_ip=caller.client_ip,
        trace_id=current_trace_id(),
    )
    event = ev.make_event("dossier.searched", source=SOURCE, subject=caller.principal.sub, data=data)
    audit_id = await _record(session, event)
    if reason:
        return Outcome(403, audit_id, reason=reason)
    return Outcome(200, audit_id, {"items": matches, "truncated": len(matches) == MAX_SEARCH_RESULTS})
