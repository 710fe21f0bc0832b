"""A small synchronous client of the audit API, for the `cdap audit` commands.

Every failure (unreachable server, refused token, problem+json answer) becomes an `AuditClientError`
whose message says what happened in words an operator can act on.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from cdap_shared.services import local_url

DEFAULT_URL = local_url("audit")


class AuditClientError(Exception):
    """The audit service could not answer the question (`status`: its HTTP status, if it answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuditClient:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _get(self, path: str, accept: str = "application/json", **params: Any) -> httpx.Response:
        query = {k: v for k, v in params.items() if v is not None}
        return self._send(self.http.build_request("GET", path, params=query, headers={"Accept": accept}))

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.http.send(request)
        except httpx.HTTPError as exc:
            raise AuditClientError(f"cannot reach the audit service at {self.url}: {exc}") from exc
        return self._check(request, response)

    def _check(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        path = request.url.path
        status = response.status_code
        if status == 401 or (status == 403 and request.method == "GET"):
            raise AuditClientError(
                f"the audit service refused the request ({status}): "
                "pass an auditor's token with --token or CDAP_TOKEN",
                status,
            )
        if status >= 400:
            raise AuditClientError(f"{path} answered {status}: {_problem(response)}", status)
        return response

    def _json(self, path: str, **params: Any) -> dict[str, Any]:
        try:
            body = self._get(path, **params).json()
        except ValueError as exc:
            raise AuditClientError(f"{path} did not answer JSON") from exc
        if not isinstance(body, dict):
            raise AuditClientError(f"{path} answered an unexpected shape")
        return body

    def checkpoint(self) -> dict[str, Any]:
        """The latest checkpoint as `{origin, tree_size, root_hash, note}`."""
        return self._json("/v1/checkpoints/latest")

    def witnessed(self, witnesses: list[str]) -> dict[str, Any]:
        """The newest checkpoint cosigned by every named witness (the shape of `checkpoint`)."""
        return self._json("/v1/checkpoints/witnessed", witness=witnesses)

    def add_cosignature(self, note: str) -> str:
        """Hand a checkpoint with a witness's cosignature line to the service; the note as now served."""
        headers = {"Content-Type": "text/plain; charset=utf-8", "Accept": "text/plain"}
        request = self.http.build_request(
            "POST", "/v1/checkpoints/cosignatures", content=note, headers=headers
        )
        return self._send(request).text

    def verifier_key(self) -> str:
        return self._get("/v1/checkpoints/key", accept="text/plain").text.strip()

    def consistency(self, first: int, second: int) -> list[bytes]:
        return _hashes(self._json("/v1/proofs/consistency", first=first, second=second))

    def inclusion(self, index: int, tree_size: int) -> list[bytes]:
        return _hashes(self._json("/v1/proofs/inclusion", index=index, tree_size=tree_size))

    def entry(self, index: int) -> dict[str, Any]:
        return self._json(f"/v1/entries/{index}")

    def page(self, cursor: str | None = None, limit: int = 1000, **filters: Any) -> dict[str, Any]:
        return self._json("/v1/entries", cursor=cursor, limit=limit, **filters)

    def iter_entries(self, cursor: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every entry matching `filters` after `cursor`, in log order, page by page."""
        while True:
            page = self.page(cursor, **filters)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def follow(self, from_index: int, **filters: Any) -> Iterator[dict[str, Any]]:
        """Entries matching `filters` from `from_index` on, as they are appended (the SSE stream).

        A dropped connection (or the server ending the stream) is resumed after the last entry
        received: nothing is missed, nothing repeated.
        """
        query = {k: v for k, v in filters.items() if v is not None}
        timeout = httpx.Timeout(10.0, read=60.0)  # the server sends a heartbeat every 15 s
        while True:
            request = self.http.build_request(
                "GET",
                "/v1/entries/stream",
                params=query | {"from_index": from_index},
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            )
            try:
                response = self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise AuditClientError(f"cannot reach the audit service at {self.url}: {exc}") from exc
            try:
                if response.status_code >= 400:
                    response.read()
                    self._check(request, response)
                for item in _sse_data(response.iter_lines()):
                    yield item
                    from_index = item["index"] + 1
            except httpx.TransportError:
                time.sleep(1)  # dropped: resume where it stopped
            finally:
                response.close()

    def last_index(self, **filters: Any) -> int | None:
        items = self.page(limit=1, order="desc", **filters)["items"]
        return int(items[0]["index"]) if items else None


def _sse_data(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON `data` of each Server-Sent Event (comments, ids and other fields skipped)."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def _hashes(body: dict[str, Any]) -> list[bytes]:
    try:
        return [base64.b64decode(h, validate=True) for h in body["hashes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditClientError("the proof is malformed") from exc


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail") or body.get("title") or body)
    except ValueError:
        return response.text[:200]
