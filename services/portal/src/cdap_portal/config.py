"""Settings of the portal (environment variables prefixed `CDAP_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from cdap_shared.services import local_url
from cdap_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    """Where the services are, and how the session cookie is protected.

    The portal owns no database and consumes no topic: `database_url` and the Kafka settings it
    inherits are unused.
    """

    service_name: str = "portal"
    identity_url: str = Field(default=local_url("identity"), description="the identity service")
    access_requests_url: str = Field(
        default=local_url("access-requests"), description="the access-requests service"
    )
    dossiers_url: str = Field(default=local_url("dossiers"), description="the dossiers service")
    audit_url: str = Field(default=local_url("audit"), description="the audit service")
    portal_secret: SecretStr | None = Field(
        default=None,
        description="keys the session cookie (encryption) and the CSRF tokens (HMAC); generated per "
        "process when unset, which logs everyone out at each restart and breaks with several replicas",
    )
    cookie_secure: bool | None = Field(
        default=None, description="Secure cookie flag; unset = only when the request came over https"
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 7, description="absolute session lifetime")
    refresh_margin_seconds: int = Field(
        default=30, ge=0, le=240, description="refresh the access token when it has less than this left"
    )
    upstream_timeout: float = Field(default=10.0, gt=0, le=120, description="seconds per API call")
    policy_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="how long the dossiers service's consultation policy (motifs per profile), read from "
        "GET /v1/dossiers/policy, is kept before it is read again",
    )
    dsfr_dir: Path | None = Field(
        default=None,
        description="the State's design system files (`dist/` of the npm package @gouvfr/dsfr); the ones "
        "`make setup` installs under services/portal/node_modules when unset",
    )
    max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="largest document a form may upload"
    )
    session_check_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="how old identity's last word on a session may be: a sign-out through another "
        "replica ends the copies of its cookie within this time",
    )
    trace_viewer_url: str | None = Field(
        default="http://127.0.0.1:16686",
        description="the trace viewer (Jaeger) a trace id links to, at `<url>/trace/<id>`; empty: no link",
    )
