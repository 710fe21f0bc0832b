"""The AsyncAPI 3.0 description of the events this service consumes and produces (`GET /asyncapi.json`).

Built by `cdap_shared.asyncapi` from the shared models: a type added in `events.py` on a consumed
topic appears here (and is logged) without a change in this service. `caf.*` is never consumed.
"""

from __future__ import annotations

from typing import Any

from cdap_audit.config import Settings
from cdap_shared import asyncapi


def document(settings: Settings) -> dict[str, Any]:
    prefixed = asyncapi.types_with_prefix
    alerts = prefixed("audit.alert.")
    return asyncapi.document(
        "CDAP audit",
        sends={settings.alerts_topic: alerts, settings.checkpoints_topic: prefixed("audit.checkpoint.")},
        receives={
            settings.identity_topic: prefixed("identity."),
            settings.access_topic: prefixed("access."),
            settings.consultations_topic: prefixed("dossier."),
            # The alerts the service sends come back to it: they are logged like any other event.
            settings.alerts_topic: alerts,
        },
    )
