"""OpenAPI examples of request and response bodies, written once per model."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict


def example(body: dict[str, Any]) -> ConfigDict:
    """A model's configuration giving its JSON schema (and so the OpenAPI document) `body` as example."""
    return ConfigDict(json_schema_extra={"examples": [body]})
