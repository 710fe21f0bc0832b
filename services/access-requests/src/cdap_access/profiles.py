"""The profiles that may be requested, loaded from a TOML file and validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cdap_shared.datafiles import load_toml

DEFAULT_PROFILES = Path(__file__).with_name("profiles.toml")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(min_length=1)
    sensitive: bool = False


class Catalogue(BaseModel):
    """Profile name -> profile; names are what requests and grants carry (`T1`, `T2`, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, Profile] = Field(min_length=1)

    def is_sensitive(self, name: str) -> bool:
        return self.profiles[name].sensitive


class ProfilesError(SystemExit):
    """A profiles file that cannot be used: the service refuses to start, saying why."""


def load_profiles(path: Path = DEFAULT_PROFILES) -> Catalogue:
    """Read and validate the catalogue; raise `ProfilesError` with a readable message otherwise."""
    return load_toml(path, Catalogue, what="profiles file", env="CDAP_PROFILES_PATH", error=ProfilesError)
