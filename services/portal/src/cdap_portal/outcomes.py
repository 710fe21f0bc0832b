"""What a lookup or a search showed, kept a few minutes so that the page after the redirect can show it
again (POST-redirect-GET): Back and refresh read it from here and never ask the dossiers service again,
which would record a second consultation.

Kept in this process's memory only (never on disk), per session id, for `ttl` seconds and at most
`capacity` results. Another replica, a restart or an expired result shows "refaites la consultation".
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """A result page: which page, its HTTP status, and what it showed."""

    page: str
    status: int
    context: dict[str, Any]


@dataclass
class Outcomes:
    ttl: float = 600.0
    capacity: int = 2000
    _kept: OrderedDict[str, tuple[float, str, Outcome]] = field(default_factory=OrderedDict)

    def keep(self, sid: str, outcome: Outcome) -> str:
        """Store `outcome` for the session `sid`; returns the key of the address that shows it."""
        self._prune()
        key = secrets.token_urlsafe(16)
        self._kept[key] = (time.monotonic() + self.ttl, sid, outcome)
        while len(self._kept) > self.capacity:
            self._kept.popitem(last=False)
        return key

    def shown(self, sid: str, key: str) -> Outcome | None:
        """The outcome under `key` if it is this session's and still kept."""
        kept = self._kept.get(key)
        if kept is None or kept[1] != sid or kept[0] < time.monotonic():
            return None
        return kept[2]

    def _prune(self) -> None:
        now = time.monotonic()
        while self._kept and next(iter(self._kept.values()))[0] < now:
            self._kept.popitem(last=False)
