"""Request bodies limited before they are read: a 413 problem+json as soon as a body is too big.

Pure ASGI middleware, outermost in every service (see `http.create_app`), so it acts before routing,
authentication and body parsing. A declared `Content-Length` over the route's maximum is refused
without reading a byte; a streamed (chunked) body is counted as it arrives and refused the moment it
passes the maximum. The connection is then closed, so the rest of the body is never read.

Each route may declare its own maximum with `openapi_extra=max_body(...)`, next to its path; the
default is `DEFAULT_MAX_BODY` (JSON and forms).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
MIB = 1024 * KIB
DEFAULT_MAX_BODY = 64 * KIB
# Uploads: 10 MiB of documents in one request, plus their multipart framing.
UPLOAD_MAX_BODY = 10 * MIB + 64 * KIB
MAX_BODY_KEY = "x-max-body-bytes"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def max_body(size: int) -> dict[str, Any]:
    """A route's own body maximum, for `openapi_extra=`; it also appears in the OpenAPI document."""
    return {MAX_BODY_KEY: size}


def declared_limits(openapi: dict[str, Any]) -> list[tuple[re.Pattern[str], str, int]]:
    """The operations of an OpenAPI document that declare their own maximum: (path regex, method, size).

    Read from the document rather than from the router: it lists every operation with its full path,
    however routers are nested."""
    limits = []
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and MAX_BODY_KEY in operation:
                regex, _, _ = compile_path(path)
                limits.append((regex, method.upper(), int(operation[MAX_BODY_KEY])))
    return limits


class _TooLarge(HTTPException):
    """Raised into the application reading the body, so it stops; the 413 is already sent by then.

    An `HTTPException`, because FastAPI turns any other error met while parsing a body into a 400."""

    def __init__(self) -> None:
        super().__init__(413)


def _problem(limit: int, path: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Request body too large",
            "status": 413,
            "detail": f"This operation accepts at most {limit} bytes.",
            "instance": path,
            "reason": "body_too_large",
        }
    ).encode()
    start = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread rest of the body is not worth reading
        ],
    }
    return start, body


class BodyLimitMiddleware:
    """Refuse bodies over the route's maximum (413) before the application reads them.

    `openapi` gives the application's OpenAPI document, where routes declare their own maximum."""

    def __init__(
        self, app: ASGIApp, *, openapi: Callable[[], dict[str, Any]], default: int = DEFAULT_MAX_BODY
    ) -> None:
        self.app = app
        self.openapi = openapi
        self.default = default
        self._declared: list[tuple[re.Pattern[str], str, int]] | None = None

    def limit_for(self, method: str, path: str) -> int:
        if self._declared is None:  # on the first request: every route is registered by then
            self._declared = declared_limits(self.openapi())
        for regex, declared_method, size in self._declared:
            if declared_method == method and regex.match(path):
                return size
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit, scope["path"])
            return
        received = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started and not refused:
                        await _refuse(send, limit, scope["path"])
                    refused = True
                    raise _TooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if refused:  # the application's own answer to the interrupted read: the 413 went already
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):  # the 413 is sent; the application just stops
            await self.app(scope, limited_receive, watched_send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int, path: str) -> None:
    start, body = _problem(limit, path)
    await send(start)
    await send({"type": "http.response.body", "body": body})
