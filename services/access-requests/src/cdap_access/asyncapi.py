"""The AsyncAPI 3.0 description of the events this service sends and receives (`GET /asyncapi.json`).

Built from the shared Pydantic models, so it cannot drift from what is actually published. Each message
is a CloudEvents 1.0 envelope (structured JSON) whose `data` has the schema shown; the Kafka key is
the subject's id (the request id; the grant id for a revocation request).
"""

from __future__ import annotations

from typing import Any

from cdap_access.config import Settings
from cdap_shared import events as ev

SENT = (
    "access.request.submitted",
    "access.request.documents_requested",
    "access.request.documents_received",
    "access.request.stage_approved",
    "access.request.approved",
    "access.request.rejected",
    "access.request.withdrawn",
    "access.request.expired",
    "access.request.reminded",
    "access.request.escalated",
    "access.grant.revocation_requested",
)
RECEIVED = (
    "identity.organisation.registered",
    "identity.organisation.updated",
    "identity.grant.issued",
    "identity.grant.revoked",
    "identity.grant.expired",
    "identity.user.provisioned",
)


def _message(event_type: str, schemas: dict[str, Any]) -> dict[str, Any]:
    model = ev.EVENT_DATA[event_type]
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {
        "name": event_type,
        "contentType": "application/json",
        "summary": f"CloudEvents 1.0 envelope, type {event_type}",
        "payload": {
            "type": "object",
            "required": ["specversion", "id", "type", "source", "subject", "time", "data"],
            "properties": {
                "type": {"const": event_type},
                "subject": {"type": "string"},
                "data": {"$ref": f"#/components/schemas/{model.__name__}"},
            },
        },
    }


def document(settings: Settings) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages = {t: _message(t, schemas) for t in (*SENT, *RECEIVED)}

    def refs(types: tuple[str, ...]) -> dict[str, Any]:
        return {t: {"$ref": f"#/components/messages/{t}"} for t in types}

    return {
        "asyncapi": "3.0.0",
        "info": {"title": "CDAP access requests — events", "version": "0.1.0"},
        "defaultContentType": "application/json",
        "channels": {
            "access": {"address": settings.access_topic, "messages": refs(SENT)},
            "identity": {"address": settings.identity_topic, "messages": refs(RECEIVED)},
        },
        "operations": {
            "sendAccessEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/access"},
                "messages": [{"$ref": f"#/channels/access/messages/{t}"} for t in SENT],
            },
            "receiveIdentityEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/identity"},
                "messages": [{"$ref": f"#/channels/identity/messages/{t}"} for t in RECEIVED],
            },
        },
        "components": {"messages": messages, "schemas": schemas},
    }
