"""Walking a service's authorization table (`services/*/tests/test_authorization_matrix.py`): every row
(an operation) x every column (a caller), each cell checked by `cdap_testing.authz_table.cell_mismatch`."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from cdap_testing.authz_table import cell_mismatch, coverage_gaps

# What a row's call is: (path, keyword arguments of the request, a text an allowed answer shows).
Call = tuple[str, dict[str, Any], str | None]


def method_and_path(row: str) -> tuple[str, str]:
    """A row's method and path: a note in parentheses or a query string after the path is dropped."""
    method, rest = row.split(" ", 1)
    return method, re.split(r"[ ?]", rest, maxsplit=1)[0]


async def table_mismatches(
    table: Mapping[str, Sequence[int | str]],
    columns: Sequence[str],
    call: Callable[[str], Call | Awaitable[Call]],
    send: Callable[[str, str, str, dict[str, Any]], Awaitable[httpx.Response]],
    snapshot: Callable[[], Awaitable[Any]],
) -> list[tuple[str, str, Any, str]]:
    """Every cell that differs from the table, as (row, column, status, why). `call(row)` prepares the
    row's request (afresh for each cell), `send(method, path, column, kwargs)` makes it as the column's
    caller, and `snapshot()` is what a refused call (401, 403) must leave unchanged."""
    wrong: list[tuple[str, str, Any, str]] = []
    for row, expected in table.items():
        method = row.split(" ", 1)[0]
        for column, want in zip(columns, expected, strict=True):
            prepared = call(row)
            path, kwargs, shows = await prepared if inspect.isawaitable(prepared) else prepared
            refused = want in (401, 403)
            before = await snapshot() if refused else None
            r = await send(method, path, column, kwargs)
            changed = refused and await snapshot() != before
            why = cell_mismatch(want, method, r, shows, changed)
            if why:
                wrong.append((row, column, r.status_code, why))
    return wrong


def assert_complete(
    openapi: Mapping[str, Any],
    table: Mapping[str, Sequence[int | str]],
    calls: Mapping[str, Any],
    columns: Sequence[str],
    callers: Iterable[str],
) -> None:
    """Each /v1 operation of the OpenAPI document has a row, each row an operation, a call and every
    column, and each column but the anonymous one a caller."""
    uncovered, orphans = coverage_gaps(openapi, {method_and_path(row) for row in table})
    assert uncovered == [], "endpoints without a row"
    assert orphans == [], "rows naming no endpoint"
    assert set(calls) == set(table)
    assert all(len(cells) == len(columns) for cells in table.values())
    assert set(callers) | {"anon"} == set(columns)
