"""Response shapes of the audit API (for OpenAPI and for checking what is served)."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


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


class EntryPage(BaseModel):
    items: list[EntryItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


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


class AlertPage(BaseModel):
    items: list[AlertItem]
    next_cursor: str | None


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


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    hashes: list[str] = Field(description="RFC 9162 §2.1.3 audit path, base64, leaf side first")


class ConsistencyProof(BaseModel):
    first: int
    second: int
    hashes: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, base64")
