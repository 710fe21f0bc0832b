"""AsyncAPI 3.0 documents of the events a service sends and receives, built from the shared models.

Each message is a CloudEvents 1.0 envelope (structured JSON) whose `data` follows the type's model in
`cdap_shared.events`, so the document cannot drift from what is published. Served at `/asyncapi.json`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI

from cdap_shared import events as ev


def _message(event_type: str, schemas: dict[str, Any]) -> dict[str, Any]:
    model = ev.EVENT_DATA[event_type]
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {
        "name": event_type,
        "contentType": "application/json",
        "summary": f"CloudEvents 1.0 envelope, type {event_type}; Kafka key = the subject",
        "payload": {
            "type": "object",
            "required": ["specversion", "id", "type", "source", "subject", "time", "data"],
            "properties": {
                "specversion": {"const": "1.0"},
                "id": {"type": "string", "description": "UUIDv7"},
                "type": {"const": event_type},
                "source": {"type": "string"},
                "subject": {"type": "string"},
                "time": {"type": "string", "format": "date-time"},
                "schemaversion": {"type": "integer"},
                "data": {"$ref": f"#/components/schemas/{model.__name__}"},
            },
        },
    }


def _name(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", topic)


def document(
    title: str, *, sends: Mapping[str, Sequence[str]], receives: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """`sends` and `receives` map a topic to the event types that travel on it."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for action, flows in (("send", sends), ("receive", receives)):
        for topic, types in flows.items():
            channel = _name(topic)
            for event_type in types:
                messages[event_type] = _message(event_type, schemas)
            channels.setdefault(channel, {"address": topic, "messages": {}})["messages"].update(
                {t: {"$ref": f"#/components/messages/{t}"} for t in types}
            )
            operations[f"{action}_{channel}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [{"$ref": f"#/channels/{channel}/messages/{t}"} for t in types],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"{title} — events", "version": "0.1.0"},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def types_with_prefix(prefix: str) -> list[str]:
    """Every registered event type starting with `prefix` (e.g. "identity.")."""
    return [t for t in ev.EVENT_DATA if t.startswith(prefix)]


def install(app: FastAPI, spec: dict[str, Any]) -> None:
    """Serve `spec` at `GET /asyncapi.json`."""

    @app.get("/asyncapi.json", tags=["ops"], include_in_schema=False)
    async def asyncapi_json() -> dict[str, Any]:
        return spec
