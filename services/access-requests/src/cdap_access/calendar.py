"""French business days: the deadlines of each approval stage count them, not calendar days.

A business day is a Monday-to-Friday that is not a public holiday. Holidays come from the `holidays`
package (`holidays.France`), with the local ones where a department has them: Alsace-Moselle adds
Good Friday and 26 December, the overseas departments the abolition of slavery. Pentecost Monday is
kept as a holiday (the package lists it): a CAF may work that day ("journée de solidarité"), but a
deadline one day too long is harmless, one day too short is not.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

# Department code -> the `holidays.France` subdivision with local public holidays.
_SUBDIVISIONS = {
    "57": "57",
    "67": "6AE",
    "68": "6AE",
    "971": "971",
    "972": "972",
    "973": "973",
    "974": "974",
    "975": "PM",
    "976": "976",
}


@lru_cache(maxsize=64)
def _holidays(year: int, subdivision: str | None) -> frozenset[date]:
    return frozenset(holidays.country_holidays("FR", years=year, subdiv=subdivision).keys())


def is_business_day(day: date, department: str | None = None) -> bool:
    """True on a weekday that is not a public holiday (national, or local to `department`)."""
    if day.weekday() >= 5:
        return False
    return day not in _holidays(day.year, _SUBDIVISIONS.get(department or ""))


def add_business_days(start: date, n: int, department: str | None = None) -> date:
    """The `n`-th business day after `start` (`start` itself never counts; `n` = 0 gives `start`).

    A request submitted on a Saturday with n = 5 is due the following Friday, unless a holiday
    falls in that week.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    day = start
    remaining = n
    while remaining:
        day += timedelta(days=1)
        if is_business_day(day, department):
            remaining -= 1
    return day


def business_days_between(start: date, end: date, department: str | None = None) -> int:
    """Business days after `start` up to `end` included: what is left before a deadline `end` seen on
    `start` (0 on the day itself); negative, the business days late, when `end` is already past."""
    low, high, sign = (start, end, 1) if end >= start else (end, start, -1)
    days = (low + timedelta(days=n) for n in range(1, (high - low).days + 1))
    return sign * sum(1 for day in days if is_business_day(day, department))


def add_years(start: date, years: int) -> date:
    """`start` moved by whole years; 29 February becomes 28 February in a common year."""
    try:
        return start.replace(year=start.year + years)
    except ValueError:
        return start.replace(year=start.year + years, day=28)


def local_date(moment: datetime, timezone: str = "Europe/Paris") -> date:
    """The calendar date at `moment` where the CAF works (a UTC midnight is already tomorrow in Paris)."""
    return moment.astimezone(ZoneInfo(timezone)).date()
