"""The caller as every service's domain sees it: who acts, with which roles, for which organisation or
department. Pure (no I/O), so domain modules can take it; `cdap_shared.auth.actor_of` builds it from a
verified token.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """Who acts: a token's subject, roles, organisation (partners) and department (CAF staff)."""

    sub: str
    roles: frozenset[str]
    org: str | None = None
    department: str | None = None
    email: str | None = None  # lower-cased; people's tokens carry it, partner systems' do not

    def has(self, *roles: str) -> bool:
        """True when the actor holds any of `roles`."""
        return not self.roles.isdisjoint(roles)
