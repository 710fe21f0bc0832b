"""Keyset paging's opaque cursors: a page's last sort key, which the client sends back for the next page."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cdap_shared.problems import Problem

Key = TypeVar("Key")


def encode_cursor(key: Sequence[object]) -> str:
    """The `next_cursor` of a page whose last row sorts at `key` (JSON values)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parse: Callable[[list[Any]], Key]) -> Key:
    """The sort key in an `encode_cursor` cursor, typed by `parse` (which raises ValueError or TypeError
    on values that are not a key); a cursor that is not one is the client's 400."""
    try:
        return parse(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Problem(
            400, "Invalid cursor", "Use the next_cursor of a previous page.", reason="bad_cursor"
        ) from exc
