"""RFC 9457 problem details: every error a client sees, in one shape, without internals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise to answer with a problem+json body; `extra` members (e.g. `reason`) are added to it."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path if request else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def install_error_table(app: FastAPI, table: Mapping[type[Exception], tuple[int, str]]) -> None:
    """Answer a service's domain errors with problem+json, from one table: error class -> (status, title).

    The nearest class of the error's MRO in `table` gives the status and title; the error's message is
    the `detail`, its `reason` attribute, when it has one, the machine-readable `reason`, and its
    `members` mapping, when it has one, further members (facts a client acts on). The domain raises
    errors in its own words and never learns of HTTP; this is the one place that maps.
    """

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        status, title = next(table[cls] for cls in type(exc).__mro__ if cls in table)
        reason = getattr(exc, "reason", None)
        extra = {"reason": reason} if reason else {}
        extra.update(getattr(exc, "members", None) or {})
        return problem_response(Problem(status, title, str(exc), **extra), request)

    for error in table:
        app.add_exception_handler(error, on_domain_error)


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error to problem+json; unexpected ones become a bare 500 with no stack trace."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
        return problem_response(
            Problem(422, "Invalid request", "The request does not match the expected shape.", errors=errors),
            request,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        return problem_response(Problem(exc.status_code, title, headers=dict(exc.headers or {})), request)

    async def on_database(request: Request, exc: Exception) -> JSONResponse:
        # SQLSTATE class 22 ("data exception", e.g. a NUL character in a text value) comes from the
        # caller's input: a 422 that changed nothing (the transaction failed). Anything else: unavailable.
        sqlstate = str(
            getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(exc, "sqlstate", "") or ""
        )
        if sqlstate.startswith("22"):
            return problem_response(
                Problem(422, "Invalid value", "A value cannot be stored as sent."), request
            )
        log.warning("database error", path=request.url.path, error_type=type(exc).__name__)
        return problem_response(Problem(503, "Service unavailable", "Try again shortly."), request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error_type=type(exc).__name__)
        return problem_response(Problem(500, "Internal error", "The error was logged."), request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(DBAPIError, on_database)
    app.add_exception_handler(asyncpg.PostgresError, on_database)
    app.add_exception_handler(Exception, on_unexpected)
