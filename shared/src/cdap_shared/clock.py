"""What day it is for CDAP. Grant validity dates and deadlines are French civil dates (Europe/Paris),
whatever the servers' time zone, so every service changes day at the same moment: a grant whose last
day is today stays usable until midnight in Paris, in identity and in dossiers alike."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

CIVIL_ZONE = ZoneInfo("Europe/Paris")


def civil_today(now: datetime | None = None) -> date:
    """The date in Paris at `now` (an aware datetime; the current time if omitted)."""
    return (now or datetime.now(UTC)).astimezone(CIVIL_ZONE).date()
