"""Settings of the dossiers service (environment variables prefixed `CDAP_`), and the context routes get."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from cdap_dossiers.lookups import Lookups
from cdap_dossiers.policy import DEFAULT_POLICY, Policy
from cdap_shared.runtime import ServiceRuntime
from cdap_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "dossiers"
    database_url: str = "postgresql+asyncpg://cdap_dossiers:cdap_dossiers@127.0.0.1:5432/cdap_dossiers"
    policy_path: Path = Field(
        default=DEFAULT_POLICY,
        description="the consultation policy (TOML: sections and motifs per profile), served at "
        "GET /v1/dossiers/policy",
    )
    rate_limit_user: float = Field(
        default=10.0, gt=0, description="lookups per second for a person (token bucket, burst of one second)"
    )
    rate_limit_client: float = Field(
        default=50.0, gt=0, description="lookups per second for a partner system"
    )
    search_rate_limit_user: float = Field(default=5.0, gt=0, description="searches per second for a person")
    search_rate_limit_client: float = Field(
        default=20.0, gt=0, description="searches per second for a partner system"
    )
    # The relay in a child process by default here: the lookups' event loop serves HTTP only
    # (docs/dossiers.md). Only the default changes; the description is the shared setting's.
    outbox_relay_process: bool = True
    consumer_group: str = Field(default="dossiers", description="its Kafka consumer group")
    caf_topic: str = Field(default="caf.dossiers", description="the CAF's feed of dossiers")
    identity_topic: str = Field(default="identity.events", description="identity's events (who may see what)")


@dataclass(frozen=True)
class Context:
    """What the routes need besides the request: the settings, the policy in force, the runtime (its
    plain asyncpg pool, opened at start, is the search's), and what the lookups read and write with."""

    settings: Settings
    policy: Policy
    runtime: ServiceRuntime
    lookups: Lookups
