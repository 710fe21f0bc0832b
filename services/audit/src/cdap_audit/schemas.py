"""Response shapes of the audit API (for OpenAPI and for checking what is served)."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from cdap_shared.examples import example

# Response examples, shared by the bodies that carry them (OpenAPI shows what an answer looks like).
ENTRY_EXAMPLE: JsonDict = {
    "index": 41,
    "event_id": "0198c3a2-8e00-7f1a-9b2c-3d4e5f6a7b8c",
    "type": "dossier.consulted",
    "time": "2026-03-02T09:15:00.123456+00:00",
    "actor": "0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d",
    "organisation_id": "0198c3a2-6b1f-7c3e-8a2d-5f4e3b2a1c0d",
    "profile": "T2",
    "subject": "1000042",
    "decision": "granted",
    "reason": None,
    "motif": "accompagnement_social",
    "sections": ["identite", "foyer"],
    "client_ip": "203.0.113.7",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "leaf": "eyJhY3RvciI6Ii4uLiJ9",
    "actor_name": "Jules Petit",
    "organisation_name": "CCAS de Rouen",
}
ALERT_EXAMPLE: JsonDict = {
    "id": 3,
    "alert_id": "0198c3a2-9f00-7a1b-8c2d-3e4f5a6b7c8d",
    "rule": "denials",
    "severity": "critical",
    "actor": ENTRY_EXAMPLE["actor"],
    "organisation_id": ENTRY_EXAMPLE["organisation_id"],
    "detail": "3 refused lookups in 10 minutes",
    "entry_index": 41,
    "event_time": "2026-03-02T09:15:00.123456+00:00",
    "raised_at": "2026-03-02T09:15:01.002000+00:00",
    "actor_name": "Jules Petit",
    "organisation_name": "CCAS de Rouen",
    "state": "open",
    "acknowledged_by": None,
    "acknowledged_at": None,
    "acknowledgement": None,
    "closed_by": None,
    "closed_at": None,
    "closing_comment": None,
}


class EntryItem(BaseModel):
    index: int = Field(description="leaf position in the Merkle tree")
    event_id: str
    type: str
    time: str
    actor: str | None
    organisation_id: str | None
    profile: str | None
    subject: str
    decision: str | None
    reason: str | None
    motif: str | None
    sections: list[str]
    client_ip: str | None
    trace_id: str | None
    leaf: str = Field(description="base64 of the exact canonical bytes hashed into the tree (RFC 6962 leaf)")
    actor_name: str | None = Field(description="the actor's name in identity's directory (not hashed)")
    organisation_name: str | None = Field(description="the organisation's name (not hashed)")

    model_config = example(ENTRY_EXAMPLE)


class EntryPage(BaseModel):
    items: list[EntryItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")

    model_config = example({"items": [ENTRY_EXAMPLE], "next_cursor": "41"})


class AlertItem(BaseModel):
    id: int
    alert_id: str
    rule: str
    severity: str
    actor: str | None
    organisation_id: str | None
    detail: str
    entry_index: int
    event_time: str
    raised_at: str
    actor_name: str | None
    organisation_name: str | None
    state: str = Field(description="open, acknowledged or closed")
    acknowledged_by: str | None
    acknowledged_at: str | None
    acknowledgement: str | None = Field(description="the acknowledging auditor's comment")
    closed_by: str | None
    closed_at: str | None
    closing_comment: str | None

    model_config = example(ALERT_EXAMPLE)


class AlertPage(BaseModel):
    items: list[AlertItem]
    next_cursor: str | None

    model_config = example({"items": [ALERT_EXAMPLE], "next_cursor": None})


def _written_text(value: str) -> str:
    """Text a person typed: not blank, no control character but line breaks and tabs, no lone surrogate
    (PostgreSQL refuses NUL and cannot encode a surrogate; neither is ever meant)."""
    if not value.strip():
        raise ValueError("the comment is blank")
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\r\t" for c in value):
        raise ValueError("the comment holds control characters or lone surrogates")
    return value.strip()


Comment = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_written_text)]


class Review(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"comment": "Appel passé au partenaire, usage expliqué."}]},
    )

    comment: Comment | None = Field(default=None, description="what is being done; required to acknowledge")


class CheckpointBody(BaseModel):
    origin: str
    tree_size: int
    root_hash: str = Field(description="base64")
    note: str = Field(description="the C2SP signed note")

    model_config = example(
        {
            "origin": "cdap.audit/caf76",
            "tree_size": 42,
            "root_hash": "3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "note": "cdap.audit/caf76\n42\n3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n"
            "— cdap.audit/caf76 Gq9x1w...\n",
        }
    )


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    hashes: list[str] = Field(description="RFC 9162 §2.1.3 audit path, base64, leaf side first")

    model_config = example(
        {
            "index": 41,
            "tree_size": 42,
            "hashes": [
                "ZmFrZS1oYXNoLTEtLS0tLS0tLS0tLS0tLS0tLS0tLS0=",
                "ZmFrZS1oYXNoLTItLS0tLS0tLS0tLS0tLS0tLS0tLS0=",
            ],
        }
    )


class ConsistencyProof(BaseModel):
    first: int
    second: int
    hashes: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, base64")

    model_config = example(
        {"first": 20, "second": 42, "hashes": ["ZmFrZS1oYXNoLTEtLS0tLS0tLS0tLS0tLS0tLS0tLS0="]}
    )
