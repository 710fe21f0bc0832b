"""The completeness check every service's authorization table runs: each /v1 operation of the service's
OpenAPI document has a row, and each row names an operation. A new endpoint then fails its service's
tests until someone decides (and tests) who may call it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


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
