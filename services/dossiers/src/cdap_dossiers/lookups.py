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

from cdap_dossiers import ratelimit
from cdap_dossiers.domain import ActiveGrant, DossierFacts, Verdict, decide, filtered_view, name_key
from cdap_dossiers.models import Dossier, GrantRecord
from cdap_dossiers.policy import Policy
from cdap_dossiers.projections import phone_key
from cdap_shared import events as ev
from cdap_shared import outbox, standing
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
    lookup_limit: int  # calls per rate window (ratelimit.py)
    search_limit: int


@dataclass
class Outcome:
    """What the route answers: an HTTP status, a body, and the id of the recorded consultation."""

    status: int
    audit_id: str
    rate: ratelimit.RateDecision
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
    """One consultation of one dossier, recorded whatever its outcome (plain asyncpg: the hot path).

    Two statements, each its own transaction: the read (which counts the call) and the record. The
    caller's standing is judged from facts the read brings, as `CurrentPrincipal` judges it elsewhere;
    the answer leaves only once the record has committed."""
    today = civil_today()
    principal = caller.principal
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_LOOKUP, principal.sub, [g.id for g in principal.grants], numero, today)
        assert row is not None
        rate = ratelimit.RateDecision("lookup", caller.lookup_limit, row["calls"])
        try:
            judged = standing.judge(principal, [standing.Fact.of(f) for f in row["facts"]], today)
        except standing.NotInGoodStanding as refusal:
            return await _refused(conn, policy, caller, numero, motif, rate, refusal.reason, 403)
        if not rate.allowed:
            return await _refused(conn, policy, caller, numero, motif, rate, "rate_limited", 429)
        if row["numero"] is None:
            return await _refused(conn, policy, caller, numero, motif, rate, "unknown_numero", 404)
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
            event = _consulted(
                caller, numero, motif, verdict, policy, decision="denied", reason=verdict.reason
            )
            return Outcome(403, await outbox.add_pg(conn, event), rate, reason=verdict.reason)
        view = filtered_view(json.loads(row["sections"]), verdict.sections)
        event = _consulted(caller, numero, motif, verdict, policy, decision="granted", sections=sorted(view))
        audit_id = await outbox.add_pg(conn, event)
    # The record has committed: only now may the data leave.
    body = {
        "numero": numero,
        "department": row["department"],
        "policy_version": policy.version,
        "sections": view,
    }
    return Outcome(200, audit_id, rate, body)


_DECISIONS = {403: "denied", 404: "not_found", 429: "rate_limited"}


async def _refused(
    conn: asyncpg.pool.PoolConnectionProxy,  # type: ignore[type-arg]
    policy: Policy,
    caller: Caller,
    numero: str,
    motif: str,
    rate: ratelimit.RateDecision,
    reason: str,
    status: int,
) -> Outcome:
    """Record a lookup refused before any grant was weighed (standing, rate, unknown numero)."""
    event = _consulted(caller, numero, motif, None, policy, decision=_DECISIONS[status], reason=reason)
    return Outcome(status, await outbox.add_pg(conn, event), rate, reason=reason)


async def record_refusal(pool: asyncpg.Pool, policy: Policy, caller: Caller, reason: str) -> str:
    """A caller identity no longer honours (suspended, client disabled...), refused before its search:
    recorded as a denied search all the same."""
    data = ev.DossierSearched(
        actor=caller.principal.sub,
        organisation_id=caller.principal.org,
        motif=None,
        criteria=[],
        decision="denied",
        reason=reason,
        policy_version=policy.version,
        client_ip=caller.client_ip,
        trace_id=current_trace_id(),
    )
    event = ev.make_event("dossier.searched", source=SOURCE, subject=caller.principal.sub, data=data)
    async with pool.acquire() as conn:
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
    """Minimal matches inside the caller's scope only (numero, names, and the birth date and commune that
    tell two namesakes apart); recorded as `dossier.searched`."""
    rate = ratelimit.RateDecision(
        "search", caller.search_limit, await ratelimit.hit(session, caller.principal.sub, "search")
    )
    grants, suspended = await active_grants(session, caller.principal)
    usable = [
        g
        for g in grants
        if g.profile in policy.profiles
        and policy.profiles[g.profile].searchable
        and criteria.motif in policy.profiles[g.profile].motifs
    ]
    if not rate.allowed:
        reason: str | None = "rate_limited"
    else:
        reason = "suspended" if suspended else None if usable else "motif_not_allowed"
    matches: list[dict[str, str | None]] = []
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
            select(
                table.numero,
                table.family_name,
                table.given_name,
                table.birth_date,
                table.sections["adresse"]["city"].astext,
            )
            .where(*where)
            .order_by(table.numero)
            .limit(MAX_SEARCH_RESULTS)
        )
        matches = [
            {
                "numero": n,
                "family_name": f,
                "given_name": g,
                "birth_date": born.isoformat() if born else None,
                "commune": city,
            }
            for n, f, g, born, city in rows.all()
        ]
    grant = usable[0] if usable else None
    data = ev.DossierSearched(
        actor=caller.principal.sub,
        organisation_id=caller.principal.org,
        profile=grant.profile if grant else None,
        grant_id=grant.id if grant else None,
        motif=criteria.motif,
        criteria=criteria.used(),
        decision="rate_limited" if reason == "rate_limited" else "denied" if reason else "granted",
        reason=reason,
        numeros=[m["numero"] for m in matches],
        policy_version=policy.version,
        client_ip=caller.client_ip,
        trace_id=current_trace_id(),
    )
    event = ev.make_event("dossier.searched", source=SOURCE, subject=caller.principal.sub, data=data)
    audit_id = await _record(session, event)
    if reason:
        return Outcome(429 if reason == "rate_limited" else 403, audit_id, rate, reason=reason)
    body = {"items": matches, "truncated": len(matches) == MAX_SEARCH_RESULTS}
    return Outcome(200, audit_id, rate, body)
