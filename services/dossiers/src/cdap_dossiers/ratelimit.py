"""Per-caller rate limits that every replica shares: a fixed one-second window counted in PostgreSQL.

Each lookup or search bumps its caller's counter for the current second in the same statement that
reads what it decides on (`lookups._LOOKUP`, `hit()` for searches), so N replicas hold a caller to the
limit together, at no extra round trip. A fixed window lets a caller spend its quota at the end of one
second and again at the start of the next (2x the rate for an instant): accepted for its simplicity.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_shared.auth import Principal

WINDOW_SECONDS = 1

# The caller's count in the current second, after this call: one row per (caller, kind), reset when a new
# second starts. `clock_timestamp()` is the database's: every replica reads the same clock. The window
# never goes back: a call that read the clock before waiting for the row's lock, while a newer second
# began, counts in the newer second (going back reset the count: twice the limit under load).
HIT = """
    INSERT INTO rate_window AS w (caller, kind, second, calls)
    VALUES ({caller}, {kind}, floor(extract(epoch FROM clock_timestamp()))::bigint, 1)
    ON CONFLICT (caller, kind) DO UPDATE
       SET calls = CASE WHEN excluded.second > w.second THEN 1 ELSE w.calls + 1 END,
           second = greatest(w.second, excluded.second)
    RETURNING calls
"""


@dataclass(frozen=True)
class RateDecision:
    """`calls` made in the current window, this one included, against `limit` per window."""

    policy: str
    limit: int
    calls: int

    @property
    def allowed(self) -> bool:
        return self.calls <= self.limit

    def headers(self) -> dict[str, str]:
        """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers), plus Retry-After when refused."""
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={WINDOW_SECONDS}',
            "RateLimit": f'"{self.policy}";r={max(self.limit - self.calls, 0)};t={WINDOW_SECONDS}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(WINDOW_SECONDS)
        return headers


def limit_for(principal: Principal, per_person: float, per_system: float) -> int:
    """The caller's calls per window: partner systems have their own, higher, limit."""
    rate = per_system if principal.has_role("partner_system") else per_person
    return max(int(rate * WINDOW_SECONDS), 1)


async def hit(session: AsyncSession, caller: str, kind: str) -> int:
    """Count one call of `kind` by `caller` in the current window (in the session's transaction)."""
    statement = text(HIT.format(caller=":caller", kind=":kind"))
    return int((await session.execute(statement, {"caller": caller, "kind": kind})).scalar_one())
