"""A small synchronous client of the audit API, for the `cdap audit` commands.

Every failure (unreachable server, refused token, problem+json answer) becomes an `AuditClientError`
whose message says what happened in words an operator can act on.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8004"


class AuditClientError(Exception):
    """The audit service could not answer the question."""


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
        try:
            response = self.http.get(path, params=query, headers={"Accept": accept})
        except httpx.HTTPError as exc:
            raise AuditClientError(f"cannot reach the audit service at {self.url}: {exc}") from exc
        if response.status_code in (401, 403):
            raise AuditClientError(
                f"the audit service refused the request ({response.status_code}): "
                "pass an auditor's token with --token or CDAP_TOKEN"
            )
        if response.status_code >= 400:
            raise AuditClientError(f"{path} answered {response.status_code}: {_problem(response)}")
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

    def last_index(self, **filters: Any) -> int | None:
        items = self.page(limit=1, order="desc", **filters)["items"]
        return int(items[0]["index"]) if items else None


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
