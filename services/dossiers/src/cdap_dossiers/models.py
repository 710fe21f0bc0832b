"""This service's tables: the dossier read model and its projection of identity's grants
(the accounts' standing is `cdap_shared.standing`'s)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from cdap_shared.inbox import InboxRecord
from cdap_shared.outbox import OutboxRecord
from cdap_shared.standing import Standing


class Dossier(SQLModel, table=True):
    """The newest version of a beneficiary file received from the CAF's feed."""

    __tablename__ = "dossier"
    __table_args__ = (
        Index("ix_dossier_name_birth", "family_name_key", "birth_date"),
        Index("ix_dossier_landlord", "landlord_siret", postgresql_where="landlord_siret IS NOT NULL"),
        Index("ix_dossier_rsa", "rsa_referent_siret", postgresql_where="rsa_referent_siret IS NOT NULL"),
    )

    numero: str = Field(primary_key=True, max_length=7)
    department: str = Field(max_length=3, index=True)
    version: int
    opposition: bool = False
    landlord_siret: str | None = Field(default=None, max_length=14)
    rsa_referent_siret: str | None = Field(default=None, max_length=14)
    nir: str = Field(max_length=15, index=True)
    family_name: str = Field(max_length=100)
    given_name: str = Field(default="", max_length=100)
    family_name_key: str = Field(max_length=100)
    birth_date: date | None = None
    phone_key: str | None = Field(default=None, max_length=20, index=True)
    postal_code: str | None = Field(default=None, max_length=5)
    sections: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    updated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    )


class GrantRecord(SQLModel, table=True):
    """A habilitation as identity announced it; `status` follows issued/revoked/expired events."""

    __tablename__ = "grant_projection"

    grant_id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, index=True)
    organisation_id: str = Field(max_length=64)
    organisation_siret: str = Field(max_length=14)
    profile: str = Field(max_length=20)
    department: str = Field(max_length=3)
    valid_from: date
    valid_until: date
    status: str = Field(default="active", max_length=10)


metadata = SQLModel.metadata
__all__ = ["Dossier", "GrantRecord", "InboxRecord", "OutboxRecord", "Standing", "metadata"]
