"""What every service's authorization table shares: how one cell's answer is judged, and the completeness
check (each /v1 operation of the service's OpenAPI document has a row, and each row names an operation),
so a new endpoint fails its service's tests until someone decides (and tests) who may call it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

# A cell for lists filtered rather than refused: a 200 that must not show the other scope's resource.
HIDDEN = "200, without the other scope's resource"


def v1_operations(openapi: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path template) of every /v1 operation in an OpenAPI document."""
    return {
        (method.upper(), path)
        for path, item in openapi["paths"].items()
        if path.startswith("/v1/")
        for method in item
    }


def route_pattern(template: str) -> re.Pattern[str]:
    """`/v1/users/{user_id}/suspend` -> a regex matching `/v1/users/{user}/suspend` or `/v1/users/42/suspend`
    (rows name placeholders as they like, or give a concrete path)."""
    parts = re.split(r"\{[^/}]+\}", template)
    return re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "$")


def coverage_gaps(openapi: Mapping[str, Any], rows: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(operations no row calls, rows naming no operation), each as "METHOD path", sorted."""
    operations = v1_operations(openapi)
    called = set(rows)
    patterns = {op: route_pattern(op[1]) for op in operations}
    uncovered = [
        f"{m} {t}" for (m, t), p in patterns.items() if not any(cm == m and p.match(cp) for cm, cp in called)
    ]
    orphans = [
        f"{cm} {cp}"
        for cm, cp in called
        if not any(m == cm and p.match(cp) for (m, _), p in patterns.items())
    ]
    return sorted(uncovered), sorted(orphans)


def cell_mismatch(
    want: int | str, method: str, response: httpx.Response, shows: str | None, changed: bool
) -> str | None:
    """Why `response` differs from the cell `want` (a status, or `HIDDEN`), or None if it matches.

    `shows` is a text the answer must show when allowed (and must not show when `HIDDEN`); `changed`
    says whether the database changed across a call the cell refuses (401/403), which it must not."""
    status = response.status_code
    refused = want in (401, 403)
    if want == HIDDEN:
        if status != 200 or (shows and shows in response.text):
            return f"shows {shows}: {response.text[:80]}"
        return None
    if status != want:
        return response.text[:120]
    if refused and not (
        response.headers.get("content-type") == "application/problem+json"
        and response.json().get("status") == want
    ):
        return f"not problem+json: {response.headers.get('content-type')}"
    if refused and changed:
        return "a refused call changed the database"
    if status == 200 and method == "GET" and shows and shows not in response.text:
        return f"does not show {shows}"
    return None
