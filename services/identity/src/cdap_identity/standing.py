"""Identity judges a caller's standing from its own tables (the other services keep a projection)."""

from __future__ import annotations

from cdap_shared.auth import Principal
from cdap_shared.runtime import ServiceRuntime
from cdap_shared.standing import CLIENT, PARTNER_SYSTEM, Fact

# The caller's account (or client), the grants its token names, and the accounts holding them.
_FACTS = """
    SELECT 'account', u.id,
           array_remove(ARRAY[CASE WHEN u.status = 'suspended' THEN 'suspended' END,
                              CASE WHEN u.must_reset_password THEN 'password_reset_required' END], NULL),
           NULL, NULL::date, NULL::date
      FROM user_account u
     WHERE u.id = $1 OR u.id IN (SELECT user_id FROM grant_habilitation WHERE id = ANY($2::text[]))
    UNION ALL
    SELECT 'grant', g.id, array_remove(ARRAY[NULLIF(g.status, 'active')], NULL), g.user_id,
           g.valid_from, g.valid_until
      FROM grant_habilitation g WHERE g.id = ANY($2::text[])
    UNION ALL
    SELECT 'client', c.id, array_remove(ARRAY[CASE WHEN c.disabled THEN 'client_disabled' END], NULL),
           c.grant_id, NULL, NULL
      FROM client c WHERE c.id = $1
"""


class OwnStanding:
    """`app.state.standing` of identity: the same facts as the projection's, from the source of truth."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    async def facts(self, principal: Principal) -> list[Fact]:
        rows = await self.runtime.pool.fetch(_FACTS, principal.sub, [g.id for g in principal.grants])
        facts = [Fact.of(row) for row in rows]
        if principal.has_role(PARTNER_SYSTEM) and not any(f.kind == CLIENT for f in facts):
            facts.append(Fact(CLIENT, principal.sub, ("client_deleted",)))  # deleted clients leave no row
        return facts
