"""Settings of the identity service (environment variables prefixed `CDAP_`)."""

from __future__ import annotations

from pydantic import Field

from cdap_identity import domain
from cdap_shared.services import local_url
from cdap_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "identity"
    database_url: str = "postgresql+asyncpg://cdap_identity:cdap_identity@127.0.0.1:5432/cdap_identity"
    consumer_group: str = Field(default="identity", description="its Kafka consumer group")
    access_topic: str = Field(
        default="access.events", description="access-requests' events (grants to issue)"
    )
    alerts_topic: str = Field(default="audit.alerts", description="audit's alerts (an account to suspend)")
    portal_url: str = Field(default=local_url("portal"), description="base of the links sent by mail")
    access_token_seconds: int = Field(default=300, ge=30, le=3600, description="lifetime of an access token")
    refresh_token_days: int = Field(default=7, ge=1, le=90, description="lifetime of a refresh token")
    activation_hours: int = Field(
        default=72, ge=1, le=720, description="how long an activation (or password reset) link works"
    )
    grant_sweep_seconds: float = Field(
        default=60.0, gt=0, description="how often ended grants expire and stale login and enrolment rows go"
    )
    key_reload_seconds: float = Field(
        default=30.0, gt=0, description="how often a replica reloads the signing keys (another's rotation)"
    )
    totp_profiles: list[str] = Field(
        default=sorted(domain.TOTP_PROFILES),
        description="habilitation profiles whose holders must use TOTP (a JSON list; CAF staff always do)",
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
