"""The AsyncAPI 3.0 description of the events this service sends and receives (`GET /asyncapi.json`).

Built from the shared Pydantic models, so it cannot drift from what is actually published. Each message
is a CloudEvents 1.0 envelope (structured JSON) whose `data` has the schema shown; the Kafka key is
the subject's id (the request id; the grant id for a revocation request).
"""

from __future__ import annotations

from typing import Any

from cdap_access.config import Settings
from cdap_access.handlers import HANDLERS
from cdap_shared import asyncapi, standing

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
RECEIVED = tuple(dict.fromkeys((*HANDLERS, *standing.EVENT_TYPES)))


def document(settings: Settings) -> dict[str, Any]:
    return asyncapi.document(
        "CDAP access requests",
        sends={settings.access_topic: SENT},
        receives={settings.identity_topic: RECEIVED},
    )
