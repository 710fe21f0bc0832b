"""Settings of the identity service (environment variables prefixed `CDAP_`)."""

from __future__ import annotations

from pydantic import Field

from cdap_identity import domain
from cdap_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "identity"
    database_url: str = "postgresql+asyncpg://cdap_identity:cdap_identity@127.0.0.1:5432/cdap_identity"
    consumer_group: str = "identity"
    access_topic: str = "access.events"
    alerts_topic: str = "audit.alerts"
    portal_url: str = Field(default="http://127.0.0.1:8000", description="base of the links sent by mail")
    access_token_seconds: int = Field(default=300, ge=30, le=3600)
    refresh_token_days: int = Field(default=7, ge=1, le=90)
    activation_hours: int = Field(default=72, ge=1, le=720)
    grant_sweep_seconds: float = Field(default=60.0, gt=0)
    key_reload_seconds: float = Field(default=30.0, gt=0)
    totp_profiles: list[str] = Field(
        default=sorted(domain.TOTP_PROFILES),
        description="profiles whose holders must use TOTP (CAF staff always do)",
    )
    totp_enrolment_seconds: int = Field(
        default=600, ge=60, le=3600, description="lifetime of the ticket that enrols TOTP at login"
    )
    client_secret_overlap_seconds: int = Field(
        default=0, ge=0, le=7 * 86400, description="how long a rotated client secret keeps working"
    )
    client_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=2,
        description="how long a replica trusts a partner-system client read from the database (changes made "
        "through the replica itself apply at once; 2 s is the bound the enforcement guarantees give)",
    )
