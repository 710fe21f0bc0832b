"""Settings of the access-requests service (environment variables prefixed `CDAP_`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from cdap_access.profiles import DEFAULT_PROFILES, Catalogue
from cdap_shared.services import local_url
from cdap_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "access-requests"
    database_url: str = "postgresql+asyncpg://cdap_access:cdap_access@127.0.0.1:5432/cdap_access"
    consumer_group: str = Field(default="access-requests", description="its Kafka consumer group")
    identity_topic: str = Field(default="identity.events", description="identity's events (grants issued)")
    access_topic: str = Field(default="access.events", description="where its own events are published")
    profiles_path: Path = Field(
        default=DEFAULT_PROFILES, description="the habilitation profiles' catalogue (TOML, sensitivity)"
    )
    timezone: str = Field(default="Europe/Paris", description="where 'today' is for deadlines and dates")
    stage_business_days: int = Field(default=5, ge=1, le=60, description="French business days per stage")
    documents_expiry_days: int = Field(
        default=30, ge=1, le=365, description="a request waiting for documents this long expires"
    )
    renewal_window_days: int = Field(
        default=30, ge=1, le=180, description="grants ending within this many days get a renewal request"
    )
    max_document_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="largest supporting document accepted"
    )
    # The service knows no CAF staff e-mail: each department's queue has a functional mailbox.
    instructors_mailbox: str = Field(
        default="instruction-caf{department}@cdap.local",
        description="the instructors' mailbox of a department (`{department}` replaced)",
    )
    managers_mailbox: str = Field(
        default="habilitations-caf{department}@cdap.local",
        description="the managers' mailbox of a department (`{department}` replaced)",
    )
    scheduler_interval_seconds: float = Field(
        default=300.0, ge=0, description="how often deadlines, expiries and renewals run; 0 disables"
    )
    mail_poll_seconds: float = Field(default=2.0, ge=0, description="mail outbox polling period; 0 disables")
    portal_url: str = Field(default=local_url("portal"), description="base of the links sent by mail")


@dataclass(frozen=True)
class Context:
    """What the use cases need besides the session: the settings and the profile catalogue."""

    settings: Settings
    catalogue: Catalogue
