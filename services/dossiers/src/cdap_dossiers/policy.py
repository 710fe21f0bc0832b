"""The consultation policy, loaded from a TOML file and validated at start (no I/O beyond reading it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdap_shared.datafiles import load_toml

SECTIONS = (
    "identite",
    "adresse",
    "contact",
    "foyer",
    "ressources",
    "droits",
    "paiements",
    "quotient_familial",
    "logement",
    "rsa",
)
DEFAULT_POLICY = Path(__file__).with_name("policy.toml")

Scope = Literal["department", "landlord", "rsa", "match"]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    sections: tuple[str, ...] = Field(min_length=1)
    motifs: tuple[str, ...] = Field(min_length=1)
    scope: Scope
    opposition: bool = True
    searchable: bool = False

    @field_validator("sections")
    @classmethod
    def _known_sections(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; known: {list(SECTIONS)}")
        return value


class Policy(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "version": "2026-01",
                    "profiles": {
                        "T2": {
                            "label": "Accompagnement social",
                            "sections": ["identite", "foyer"],
                            "motifs": ["accompagnement_social"],
                            "scope": "department",
                            "opposition": True,
                            "searchable": True,
                        }
                    },
                }
            ]
        },
    )

    version: str = Field(min_length=1)
    profiles: dict[str, Profile] = Field(min_length=1)


class PolicyError(SystemExit):
    """A policy file that cannot be used: the service refuses to start, saying why."""


def load_policy(path: Path = DEFAULT_POLICY) -> Policy:
    """Read and validate the policy; raise `PolicyError` with a readable message otherwise."""
    return load_toml(path, Policy, what="policy file", env="CDAP_POLICY_PATH", error=PolicyError)
