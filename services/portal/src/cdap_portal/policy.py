"""The consultation policy as far as the lookup form needs it: motifs per profile, and whether a profile
must give the family name (scope `match`) or may search (`domain.PolicyView`, the pure view of it).

The dossiers service publishes its policy (`GET /v1/dossiers/policy`); the portal reads it with the
signed-in person's token and keeps it for `CDAP_POLICY_CACHE_SECONDS`. Nothing here decides anything:
the dossiers service still judges every lookup; a wrong form only means a refusal the user can read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from cdap_portal.clients import ApiError
from cdap_portal.domain import PolicyView

if TYPE_CHECKING:
    from cdap_portal.auth import Api

log = structlog.get_logger(__name__)
POLICY_PATH = "/v1/dossiers/policy"


class DossiersPolicy:
    """The policy dossiers served last, kept `ttl` seconds: it changes with a dossiers deployment, not
    between two page loads. Dossiers unreachable: the last view read (at first, an empty one, and the form
    asks for a free motif), asked again at the next page."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._view = PolicyView()
        self._read_at = 0.0

    async def view(self, api: Api) -> PolicyView:
        """The policy, read from dossiers as the signed-in person when the kept copy is missing or old."""
        if self._view.known() and time.monotonic() - self._read_at < self.ttl:
            return self._view
        try:
            response = await api.call("dossiers", "GET", POLICY_PATH)
            if response.status_code != 200:
                raise ApiError("dossiers", response.status_code)
            self._view = PolicyView.from_document(response.json())
        except (ApiError, ValueError) as exc:
            log.warning("consultation policy not read from dossiers", error=str(exc))
            return self._view
        self._read_at = time.monotonic()
        return self._view
