"""HTTP bodies of the dossiers API (pydantic): what a lookup answers, what a search takes and answers."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdap_shared.identifiers import NIR_PATTERN, is_nir

NAME_LENGTH = 100  # the longest family name a lookup or search takes


class DossierView(BaseModel):
    numero: str
    department: str
    policy_version: str
    sections: dict[str, Any]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "numero": "1000042",
                    "department": "76",
                    "policy_version": "2026-01",
                    "sections": {
                        "foyer": {
                            "members": [
                                {"role": "allocataire", "family_name": "Martin", "given_name": "Claire"}
                            ],
                            "children": 0,
                        }
                    },
                }
            ]
        }
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"motif": "accompagnement_social", "family_name": "Martin", "birth_date": "1984-03-12"}
            ]
        },
    )

    motif: str = Field(pattern=r"^[a-z_]{1,50}$")
    nir: str | None = Field(default=None, pattern=NIR_PATTERN)
    family_name: str | None = Field(default=None, min_length=1, max_length=NAME_LENGTH)
    birth_date: date | None = None
    telephone: str | None = Field(default=None, pattern=r"^\+?[0-9 .\-]{9,20}$")
    postal_code: str | None = Field(default=None, pattern=r"^\d{5}$")

    @field_validator("nir")
    @classmethod
    def _nir_key(cls, nir: str | None) -> str | None:
        if nir is not None and not is_nir(nir):
            raise ValueError("the NIR's key (its last two digits) does not match the 13 characters before it")
        return nir

    @model_validator(mode="after")
    def _one_identifying_criterion(self) -> SearchRequest:
        if not (self.nir or self.family_name or self.telephone):
            raise ValueError("give nir, family_name (+ birth_date) or telephone")
        if self.birth_date and not self.family_name:
            raise ValueError("birth_date goes with family_name")
        return self


class SearchResult(BaseModel):
    items: list[dict[str, str | None]]
    truncated: bool

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "numero": "1000042",
                            "family_name": "Martin",
                            "given_name": "Claire",
                            "department": "76",
                        }
                    ],
                    "truncated": False,
                }
            ]
        }
    )
