"""French business days around public holidays, weekends, and local holidays (Alsace-Moselle)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdap_access.calendar import (
    add_business_days,
    add_years,
    business_days_between,
    is_business_day,
    local_date,
)


@pytest.mark.parametrize(
    ("start", "n", "department", "expected", "why"),
    [
        (date(2026, 7, 13), 1, None, date(2026, 7, 15), "Tuesday 14 July 2026 (fête nationale) is skipped"),
        (date(2026, 7, 10), 5, None, date(2026, 7, 20), "a week spanning 14 July takes one day more"),
        (
            date(2025, 8, 14),
            1,
            None,
            date(2025, 8, 18),
            "Friday 15 August 2025 (Assomption), then the weekend",
        ),
        (date(2026, 8, 14), 1, None, date(2026, 8, 17), "15 August 2026 is a Saturday: nothing extra"),
        (date(2026, 12, 24), 1, None, date(2026, 12, 28), "Friday 25 December 2026, then the weekend"),
        (date(2026, 12, 21), 5, None, date(2026, 12, 29), "Christmas week: Mon 21 -> Tue 29"),
        (date(2025, 12, 24), 1, None, date(2025, 12, 26), "26 December is a working day in most of France"),
        (date(2025, 12, 24), 1, "57", date(2025, 12, 29), "but a holiday in Moselle (Saint-Étienne)"),
        (date(2026, 4, 3), 1, None, date(2026, 4, 7), "Easter Monday 6 April 2026 is skipped"),
        (date(2026, 4, 1), 5, None, date(2026, 4, 9), "Easter week: Wed 1 -> Thu 9"),
        (date(2026, 4, 2), 1, None, date(2026, 4, 3), "Good Friday is a working day nationally"),
        (
            date(2026, 4, 2),
            1,
            "67",
            date(2026, 4, 7),
            "but not in Alsace: Good Friday and Easter Monday skipped",
        ),
        (date(2026, 11, 28), 5, None, date(2026, 12, 4), "submitted on a Saturday: due the next Friday"),
        (date(2026, 11, 27), 0, None, date(2026, 11, 27), "zero days is the start itself"),
    ],
)
def test_add_business_days(start: date, n: int, department: str | None, expected: date, why: str) -> None:
    assert add_business_days(start, n, department) == expected, why


def test_holidays_and_weekends_are_not_business_days() -> None:
    assert not is_business_day(date(2026, 7, 14))
    assert not is_business_day(date(2026, 12, 25))
    assert not is_business_day(date(2026, 4, 6))
    assert not is_business_day(date(2026, 11, 28))  # Saturday
    assert is_business_day(date(2026, 11, 27))
    assert not is_business_day(date(2026, 5, 27), "971")  # abolition of slavery in Guadeloupe
    assert is_business_day(date(2026, 5, 27), "76")


def test_negative_days_are_refused() -> None:
    with pytest.raises(ValueError, match="n must be"):
        add_business_days(date(2026, 1, 5), -1)


@given(
    start=st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)),
    n=st.integers(min_value=1, max_value=40),
    department=st.sampled_from([None, "76", "57", "67", "971", "2A"]),
)
def test_the_result_is_the_nth_business_day_after_start(start: date, n: int, department: str | None) -> None:
    due = add_business_days(start, n, department)
    assert is_business_day(due, department)
    between = [start + timedelta(days=d) for d in range(1, (due - start).days + 1)]
    assert sum(is_business_day(day, department) for day in between) == n
    assert add_business_days(start, n + 1, department) > due


def test_add_years_keeps_29_february_valid() -> None:
    assert add_years(date(2028, 2, 29), 1) == date(2029, 2, 28)
    assert add_years(date(2026, 11, 27), 1) == date(2027, 11, 27)


def test_today_is_the_date_in_paris() -> None:
    assert local_date(datetime(2026, 7, 13, 22, 30, tzinfo=UTC)) == date(2026, 7, 14)
    assert local_date(datetime(2026, 1, 1, 22, 59, tzinfo=UTC)) == date(2026, 1, 1)


@pytest.mark.parametrize(
    ("today", "due", "department", "expected", "why"),
    [
        (date(2026, 7, 13), date(2026, 7, 13), None, 0, "due today: nothing left"),
        (date(2026, 7, 13), date(2026, 7, 15), None, 1, "14 July in between does not count"),
        (date(2026, 7, 10), date(2026, 7, 20), None, 5, "a Friday to the Monday week after next"),
        (date(2026, 7, 20), date(2026, 7, 10), None, -5, "late: the business days past the due date"),
        (date(2025, 12, 24), date(2025, 12, 29), "57", 1, "26 December counts nowhere but Alsace-Moselle"),
        (date(2025, 12, 24), date(2025, 12, 29), "76", 2, "in Seine-Maritime 26 December is worked"),
    ],
)
def test_business_days_left_before_a_deadline(
    today: date, due: date, department: str | None, expected: int, why: str
) -> None:
    assert business_days_between(today, due, department) == expected, why


@given(st.dates(date(2020, 1, 1), date(2030, 12, 31)), st.integers(0, 60))
def test_business_days_left_undo_adding_them(start: date, n: int) -> None:
    assert business_days_between(start, add_business_days(start, n)) == n
